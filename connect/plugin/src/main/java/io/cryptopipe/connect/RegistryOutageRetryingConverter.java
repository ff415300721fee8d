package io.cryptopipe.connect;

import java.io.IOException;
import java.lang.reflect.Method;
import java.util.HashMap;
import java.util.Map;
import java.util.Optional;

import org.apache.kafka.common.header.Headers;
import org.apache.kafka.connect.data.Schema;
import org.apache.kafka.connect.data.SchemaAndValue;
import org.apache.kafka.connect.errors.ConnectException;
import org.apache.kafka.connect.errors.RetriableException;
import org.apache.kafka.connect.storage.Converter;

/**
 * Wraps a schema-registry converter (by default Apicurio's AvroConverter) and tells Connect which of
 * its failures are the registry's, not the record's: an I/O error or an HTTP 5xx while fetching a
 * schema becomes a {@link RetriableException}, which Connect retries (errors.retry.timeout, -1 = until
 * it works) instead of sending a good record to the dead-letter topic. Everything else (no Confluent
 * framing, an id the registry never issued, bytes that do not decode) is rethrown as it was and goes
 * to the dead-letter topic.
 *
 * <p>Config: {@code delegate.class} (default Apicurio's AvroConverter); every other key is passed to the
 * delegate unchanged. Lives in the delegate's plugin folder, so it loads the delegate's classes.
 */
public class RegistryOutageRetryingConverter implements Converter {

    public static final String DELEGATE_CLASS = "delegate.class";
    static final String DEFAULT_DELEGATE = "io.apicurio.registry.utils.converter.AvroConverter";

    private Converter delegate;

    public RegistryOutageRetryingConverter() {
    }

    RegistryOutageRetryingConverter(Converter delegate) {
        this.delegate = delegate;
    }

    @Override
    public void configure(Map<String, ?> configs, boolean isKey) {
        Map<String, Object> passOn = new HashMap<>(configs);
        Object className = passOn.remove(DELEGATE_CLASS);
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
            return delegate.toConnectData(topic, value);
        } catch (RuntimeException e) {
            throw classify(e);
        }
    }

    @Override
    public SchemaAndValue toConnectData(String topic, Headers headers, byte[] value) {
        try {
            return delegate.toConnectData(topic, headers, value);
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

    static RuntimeException classify(RuntimeException failure) {
        if (isRegistryOutage(failure)) {
            return new RetriableException("schema registry unavailable, will retry: " + rootMessage(failure), failure);
        }
        return failure;
    }

    /** The registry could not be reached or failed (5xx), as opposed to refusing this record's schema id. */
    static boolean isRegistryOutage(Throwable failure) {
        for (Throwable t = failure; t != null; t = t.getCause() == t ? null : t.getCause()) {
            if (t.getClass().getSimpleName().contains("NotFound")) {
                return false;
            }
            if (t instanceof IOException) {
                return true;
            }
            Optional<Optional<Integer>> status = httpStatus(t);
            if (status.isPresent()) {
                // No status at all: the request never got an HTTP answer (Apicurio's client wraps the
                // I/O error in an exception without a cause, naming it only in getError().getName()).
                return status.get().map(code -> code >= 500 || code == 408 || code == 429).orElse(true);
            }
        }
        return false;
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
