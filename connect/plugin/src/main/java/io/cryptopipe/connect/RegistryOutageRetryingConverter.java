package io.cryptopipe.connect;

import java.io.IOException;
import java.lang.reflect.Method;
import java.net.SocketException;
import java.net.SocketTimeoutException;
import java.net.UnknownHostException;
import java.net.http.HttpTimeoutException;
import java.time.Clock;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;

import org.apache.kafka.common.header.Headers;
import org.apache.kafka.connect.data.Schema;
import org.apache.kafka.connect.data.SchemaAndValue;
import org.apache.kafka.connect.errors.ConnectException;
import org.apache.kafka.connect.errors.RetriableException;
import org.apache.kafka.connect.storage.Converter;

/**
 * Wraps a schema-registry converter (by default Apicurio's AvroConverter) and tells Connect which of
 * its failures are the registry's, not the record's. Only these are a registry outage: a connection
 * failure raised by the network stack (connection refused, reset, timed out, unknown host; a request
 * Apicurio's client got no HTTP answer to) and an HTTP 5xx, 408 or 429 from the registry. They become a
 * {@link RetriableException}, which Connect retries (errors.retry.timeout) instead of sending a good
 * record to the dead-letter topic. Everything else is the record's fault and is rethrown as it was, so
 * Connect dead-letters it (stage VALUE_CONVERTER): no Confluent framing, an id the registry never
 * issued (404), and bytes that do not decode, including an Avro body cut short (an EOFException from
 * Avro's decoder is an IOException, but not the network's).
 *
 * <p>An outage longer than {@code registry.outage.timeout.ms} (default 10 minutes) fails the task
 * loudly: Connect's own retry limit cannot do that, because with errors.tolerance=all an exhausted
 * retry is tolerated and the good record dead-lettered. So once the outage has lasted that long, the
 * next failure is thrown as a {@link RegistryOutageTooLong}, an {@link Error}, which Connect's error
 * handler (it tolerates Exceptions only) lets through: the task FAILS with that message in its trace,
 * nothing is dead-lettered or committed, and the supervisor restarts it. Set errors.retry.timeout
 * somewhat above this timeout, so that Connect's limit never comes first.
 *
 * <p>The registry refusing the worker's credentials (HTTP 401/403) is neither: every record would fail
 * alike, so the task fails at once ({@link RegistryAccessDenied}) instead of dead-lettering them all.
 *
 * <p>Config: {@code delegate.class} (default Apicurio's AvroConverter), {@code registry.outage.timeout.ms};
 * every other key is passed to the delegate unchanged. Lives in the delegate's plugin folder, so it loads
 * the delegate's classes.
 */
public class RegistryOutageRetryingConverter implements Converter {

    public static final String DELEGATE_CLASS = "delegate.class";
    public static final String OUTAGE_TIMEOUT_MS = "registry.outage.timeout.ms";
    static final String DEFAULT_DELEGATE = "io.apicurio.registry.utils.converter.AvroConverter";
    static final long DEFAULT_OUTAGE_TIMEOUT_MS = 600_000L;

    /** Connection failures, by class (what the JDK's network stack throws) and by simple name (what
     *  Apicurio's REST client keeps of them in its error object, without a cause or HTTP status). */
    private static final List<Class<? extends Throwable>> CONNECTION_FAILURES = List.of(
            SocketException.class, SocketTimeoutException.class, UnknownHostException.class, HttpTimeoutException.class);
    private static final Set<String> CONNECTION_FAILURE_NAMES = Set.of(
            "ConnectException", "SocketException", "NoRouteToHostException", "PortUnreachableException",
            "SocketTimeoutException", "UnknownHostException", "HttpTimeoutException", "HttpConnectTimeoutException",
            "ClosedChannelException", "IOException", "EOFException", "SSLException", "SSLHandshakeException",
            "InterruptedException");
    /** Packages of the JDK's network stack: an I/O error thrown there is the connection's, not the record's. */
    private static final List<String> NETWORK_PACKAGES = List.of(
            "java.net.", "jdk.internal.net.", "sun.net.", "sun.nio.ch.", "javax.net.", "sun.security.ssl.");

    private final Clock clock;
    private Converter delegate;
    private long outageTimeoutMs = DEFAULT_OUTAGE_TIMEOUT_MS;
    private long outageSince = -1;  // clock millis of the first failure of the current outage; -1: none

    public RegistryOutageRetryingConverter() {
        this.clock = Clock.systemUTC();
    }

    RegistryOutageRetryingConverter(Converter delegate, Clock clock) {
        this.delegate = delegate;
        this.clock = clock;
    }

    @Override
    public void configure(Map<String, ?> configs, boolean isKey) {
        Map<String, Object> passOn = new HashMap<>(configs);
        Object className = passOn.remove(DELEGATE_CLASS);
        Object timeout = passOn.remove(OUTAGE_TIMEOUT_MS);
        if (timeout != null) {
            try {
                outageTimeoutMs = Long.parseLong(timeout.toString().trim());
            } catch (NumberFormatException e) {
                throw new org.apache.kafka.common.config.ConfigException(OUTAGE_TIMEOUT_MS, timeout, "not a whole number of milliseconds");
            }
            if (outageTimeoutMs < 0) {
                throw new org.apache.kafka.common.config.ConfigException(OUTAGE_TIMEOUT_MS, timeout, "must be >= 0");
            }
        }
        if (delegate == null) {
            delegate = instantiate(className == null ? DEFAULT_DELEGATE : className.toString());
        }
        delegate.configure(passOn, isKey);
    }

    private Converter instantiate(String className) {
        try {
            Class<?> type = Class.forName(className, true, getClass().getClassLoader());
            return (Converter) type.getDeclaredConstructor().newInstance();
        } catch (ReflectiveOperationException | ClassCastException e) {
            throw new ConnectException("cannot create the delegate converter " + className, e);
        }
    }

    @Override
    public byte[] fromConnectData(String topic, Schema schema, Object value) {
        return delegate.fromConnectData(topic, schema, value);
    }

    @Override
    public byte[] fromConnectData(String topic, Headers headers, Schema schema, Object value) {
        return delegate.fromConnectData(topic, headers, schema, value);
    }

    @Override
    public SchemaAndValue toConnectData(String topic, byte[] value) {
        try {
            SchemaAndValue converted = delegate.toConnectData(topic, value);
            outageSince = -1;
            return converted;
        } catch (RuntimeException e) {
            throw classify(e);
        }
    }

    @Override
    public SchemaAndValue toConnectData(String topic, Headers headers, byte[] value) {
        try {
            SchemaAndValue converted = delegate.toConnectData(topic, headers, value);
            outageSince = -1;
            return converted;
        } catch (RuntimeException e) {
            throw classify(e);
        }
    }

    @Override
    public void close() {
        try {
            delegate.close();
        } catch (Exception e) {
            throw new ConnectException("closing the delegate converter failed", e);
        }
    }

    /** Thrown once an outage has lasted {@code registry.outage.timeout.ms}: an Error, so that Connect fails the task. */
    public static final class RegistryOutageTooLong extends Error {
        private static final long serialVersionUID = 1L;

        RegistryOutageTooLong(String message, Throwable cause) {
            super(message, cause);
        }
    }

    /** Thrown when the registry refuses the worker's credentials: no record's fault, and no outage to wait out. */
    public static final class RegistryAccessDenied extends Error {
        private static final long serialVersionUID = 1L;

        RegistryAccessDenied(String message, Throwable cause) {
            super(message, cause);
        }
    }

    /**
     * The failure as Connect should see it: retriable (an outage), fatal (an outage for too long, or the
     * registry refusing this worker's credentials, which would otherwise dead-letter every good record)
     * or as it was (the record's fault).
     */
    RuntimeException classify(RuntimeException failure) {
        if (isAccessDenied(failure)) {
            throw new RegistryAccessDenied("schema registry refused this worker's credentials (HTTP 401/403): failing"
                    + " the task instead of dead-lettering good records; fix the registry credentials of the converter."
                    + " Last failure: " + rootMessage(failure), failure);
        }
        if (!isRegistryOutage(failure)) {
            return failure;
        }
        long now = clock.millis();
        if (outageSince < 0) {
            outageSince = now;
        }
        long lasted = now - outageSince;
        if (lasted >= outageTimeoutMs) {
            outageSince = -1;  // a restarted task (a new instance anyway) starts counting again
            throw new RegistryOutageTooLong("schema registry unavailable for " + lasted / 1000 + " s (more than "
                    + OUTAGE_TIMEOUT_MS + "=" + outageTimeoutMs + "): failing the task; nothing is lost, the records stay in"
                    + " Kafka and the task resumes where it stopped once restarted with the registry back. Last failure: "
                    + rootMessage(failure), failure);
        }
        return new RetriableException("schema registry unavailable for " + lasted / 1000 + " s, will retry: "
                + rootMessage(failure), failure);
    }

    /**
     * The registry could not be reached or answered 5xx / 408 / 429, as opposed to refusing this record's
     * schema id (404) or the record's bytes not decoding.
     */
    static boolean isRegistryOutage(Throwable failure) {
        for (Throwable t = failure; t != null; t = t.getCause() == t ? null : t.getCause()) {
            if (t.getClass().getSimpleName().contains("NotFound")) {
                return false;
            }
            if (isConnectionFailure(t)) {
                return true;
            }
            if (t.getClass().getSimpleName().equals("RateLimitedClientException")) {
                return true;  // Apicurio's client raises it for HTTP 429, with no status to read (its tests show it)
            }
            Optional<Optional<Integer>> status = httpStatus(t);
            if (status.isPresent()) {
                if (status.get().isPresent()) {
                    int code = status.get().get();
                    return code >= 500 || code == 408 || code == 429;
                }
                // No status: the request never got an HTTP answer. Apicurio's client wraps the I/O error in
                // an exception without a cause, naming it only in getError().getName().
                return errorName(t).map(CONNECTION_FAILURE_NAMES::contains).orElse(false);
            }
        }
        return false;
    }

    /** HTTP 401 or 403 from the registry (Apicurio's NotAuthorizedException / ForbiddenException, or the status). */
    static boolean isAccessDenied(Throwable failure) {
        for (Throwable t = failure; t != null; t = t.getCause() == t ? null : t.getCause()) {
            String name = t.getClass().getSimpleName();
            if (name.equals("NotAuthorizedException") || name.equals("ForbiddenException")) {
                return true;
            }
            Optional<Optional<Integer>> status = httpStatus(t);
            if (status.isPresent() && status.get().isPresent()) {
                int code = status.get().get();
                return code == 401 || code == 403;
            }
        }
        return false;
    }

    /** A connection failure by its class, or an I/O error raised inside the JDK's network stack. */
    static boolean isConnectionFailure(Throwable t) {
        if (CONNECTION_FAILURES.stream().anyMatch(type -> type.isInstance(t))) {
            return true;
        }
        if (!(t instanceof IOException)) {
            return false;
        }
        StackTraceElement[] frames = t.getStackTrace();
        return frames.length > 0 && NETWORK_PACKAGES.stream().anyMatch(frames[0].getClassName()::startsWith);
    }

    private static Optional<String> errorName(Throwable t) {
        try {
            Object error = t.getClass().getMethod("getError").invoke(t);
            Object name = error == null ? null : error.getClass().getMethod("getName").invoke(error);
            return Optional.ofNullable(name == null ? null : name.toString());
        } catch (ReflectiveOperationException | RuntimeException e) {
            return Optional.empty();
        }
    }

    /**
     * Apicurio's client exceptions carry an error object: empty when {@code t} has none, else the HTTP
     * status in it, if there was one.
     */
    private static Optional<Optional<Integer>> httpStatus(Throwable t) {
        try {
            Method getError = t.getClass().getMethod("getError");
            Object error = getError.invoke(t);
            if (error == null) {
                return Optional.empty();
            }
            Object code = error.getClass().getMethod("getErrorCode").invoke(error);
            return Optional.of(Optional.ofNullable(code instanceof Integer i ? i : null));
        } catch (ReflectiveOperationException | RuntimeException e) {
            return Optional.empty();
        }
    }

    private static String rootMessage(Throwable failure) {
        Throwable root = failure;
        while (root.getCause() != null && root.getCause() != root) {
            root = root.getCause();
        }
        return root.getClass().getName() + ": " + root.getMessage();
    }
}
