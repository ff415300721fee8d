package io.cryptopipe.connect;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.EOFException;
import java.io.IOException;
import java.net.ConnectException;
import java.net.SocketTimeoutException;
import java.net.UnknownHostException;
import java.time.Clock;
import java.time.Duration;
import java.time.Instant;
import java.time.ZoneOffset;
import java.util.Map;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.connect.data.Schema;
import org.apache.kafka.connect.data.SchemaAndValue;
import org.apache.kafka.connect.errors.DataException;
import org.apache.kafka.connect.errors.RetriableException;
import org.apache.kafka.connect.storage.Converter;
import org.junit.jupiter.api.Test;

/** Which delegate failures Connect retries (registry outage) and which go to the dead-letter topic (bad record). */
class RegistryOutageRetryingConverterTest {

    /** Shaped like Apicurio's client exceptions: the HTTP status in getError().getErrorCode(), the name of
     *  the I/O error (when there was no answer) in getError().getName(). */
    static class RestError {
        private final Integer code;
        private final String name;

        RestError(Integer code, String name) {
            this.code = code;
            this.name = name;
        }

        public Integer getErrorCode() {
            return code;
        }

        public String getName() {
            return name;
        }
    }

    static class RestClientException extends RuntimeException {
        private final RestError error;

        RestClientException(Integer status) {
            this(status, status == null ? "ConnectException" : "RestError");
        }

        RestClientException(Integer status, String name) {
            super(status == null ? null : "HTTP " + status);
            this.error = new RestError(status, name);
        }

        public RestError getError() {
            return error;
        }
    }

    static class ArtifactNotFoundException extends RestClientException {
        ArtifactNotFoundException() {
            super(404);
        }
    }

    static Converter failingWith(RuntimeException failure) {
        return new Converter() {
            @Override
            public void configure(Map<String, ?> configs, boolean isKey) {
            }

            @Override
            public byte[] fromConnectData(String topic, Schema schema, Object value) {
                return new byte[0];
            }

            @Override
            public SchemaAndValue toConnectData(String topic, byte[] value) {
                throw failure;
            }
        };
    }

    static RuntimeException thrownBy(RuntimeException delegateFailure) {
        var converter = new RegistryOutageRetryingConverter(failingWith(delegateFailure), Clock.systemUTC());
        converter.configure(Map.of("delegate.class", "ignored.when.injected"), false);
        return assertThrows(RuntimeException.class, () -> converter.toConnectData("t", new byte[] {0, 0, 0, 0, 1}));
    }

    /** An EOFException as Avro's BinaryDecoder raises it: thrown from Avro's code, not the network's. */
    static EOFException avroEof() {
        EOFException eof = new EOFException();
        eof.setStackTrace(new StackTraceElement[] {
            new StackTraceElement("org.apache.avro.io.BinaryDecoder", "ensureBounds", "BinaryDecoder.java", 542)});
        return eof;
    }

    /** An IOException as the JDK's HTTP client raises it when the server closes the connection. */
    static IOException httpClientIo() {
        IOException io = new IOException("HTTP/1.1 header parser received no bytes");
        io.setStackTrace(new StackTraceElement[] {
            new StackTraceElement("jdk.internal.net.http.HttpClientImpl", "send", "HttpClientImpl.java", 951)});
        return io;
    }

    @Test
    void aConnectionRefusedIsRetried() {
        RuntimeException e = thrownBy(new IllegalStateException("fetch failed", new ConnectException("Connection refused")));
        assertInstanceOf(RetriableException.class, e);
        assertTrue(e.getMessage().contains("Connection refused"), e.getMessage());
    }

    @Test
    void aRequestThatGotNoHttpAnswerIsRetried() {
        // What Apicurio 2.6's client throws on "connection refused": no cause, no status.
        assertInstanceOf(RetriableException.class, thrownBy(new RestClientException(null)));
    }

    @Test
    void aServerErrorOfTheRegistryIsRetried() {
        assertInstanceOf(RetriableException.class, thrownBy(new RestClientException(503)));
    }

    @Test
    void anIdTheRegistryNeverIssuedIsNotRetried() {
        RuntimeException notFound = new ArtifactNotFoundException();
        assertSame(notFound, thrownBy(notFound));
    }

    @Test
    void anAvroBodyCutShortIsNotRetried() {
        // What Apicurio's AvroDeserializer throws for a real id followed by a truncated body.
        RuntimeException truncated = new IllegalStateException(avroEof());
        assertSame(truncated, thrownBy(truncated));
        RuntimeException wrapped = new org.apache.kafka.connect.errors.DataException("Failed to deserialize",
                new IllegalStateException(new IOException("decoding failed", avroEof())));
        assertSame(wrapped, thrownBy(wrapped));
    }

    @Test
    void anIoErrorOfTheRecordIsNotAnOutageButOneOfTheNetworkIs() {
        assertFalse(RegistryOutageRetryingConverter.isRegistryOutage(new IllegalStateException(new IOException("bad bytes"))));
        assertTrue(RegistryOutageRetryingConverter.isRegistryOutage(new IllegalStateException(httpClientIo())));
    }

    @Test
    void connectionFailuresOfEveryKindAreRetried() {
        for (Throwable cause : new Throwable[] {new ConnectException("refused"), new SocketTimeoutException("read timed out"),
                new UnknownHostException("registry"), new java.net.SocketException("Connection reset"),
                new java.net.http.HttpConnectTimeoutException("connect timed out")}) {
            assertInstanceOf(RetriableException.class, thrownBy(new IllegalStateException(cause)), cause.toString());
        }
        for (String name : new String[] {"ConnectException", "HttpConnectTimeoutException", "IOException"}) {
            assertInstanceOf(RetriableException.class, thrownBy(new RestClientException(null, name)), name);
        }
    }

    @Test
    void aStatuslessClientErrorThatIsNotAConnectionFailureIsNotRetried() {
        RuntimeException parse = new RestClientException(null, "JsonParseException");
        assertSame(parse, thrownBy(parse));
    }

    @Test
    void rateLimitsAndTimeoutsOfTheRegistryAreRetriedOtherClientErrorsAreNot() {
        assertInstanceOf(RetriableException.class, thrownBy(new RestClientException(429)));
        assertInstanceOf(RetriableException.class, thrownBy(new RestClientException(408)));
        assertInstanceOf(RetriableException.class, thrownBy(new RestClientException(500)));
        for (int code : new int[] {400, 409, 422}) {
            RuntimeException refused = new RestClientException(code);
            assertSame(refused, thrownBy(refused));
        }
    }

    static class NotAuthorizedException extends RuntimeException {
    }

    @Test
    void refusedCredentialsFailTheTaskAtOnceInsteadOfDeadLetteringEveryRecord() {
        for (RuntimeException denied : new RuntimeException[] {new RestClientException(401), new RestClientException(403),
                new IllegalStateException(new NotAuthorizedException())}) {
            var converter = new RegistryOutageRetryingConverter(failingWith(denied), Clock.systemUTC());
            converter.configure(Map.of(), false);
            var fatal = assertThrows(RegistryOutageRetryingConverter.RegistryAccessDenied.class,
                    () -> converter.toConnectData("t", new byte[] {0, 0, 0, 0, 1}));
            assertTrue(fatal.getMessage().contains("credentials"), fatal.getMessage());
        }
    }

    @Test
    void anOutageLongerThanTheTimeoutFailsTheTaskWithAnError() {
        AtomicReference<Instant> now = new AtomicReference<>(Instant.parse("2026-11-30T00:00:00Z"));
        Clock clock = new Clock() {
            @Override public ZoneOffset getZone() { return ZoneOffset.UTC; }
            @Override public Clock withZone(java.time.ZoneId zone) { return this; }
            @Override public Instant instant() { return now.get(); }
        };
        AtomicReference<RuntimeException> failure = new AtomicReference<>(new IllegalStateException(new ConnectException("refused")));
        Converter delegate = new Converter() {
            @Override public void configure(Map<String, ?> configs, boolean isKey) { }
            @Override public byte[] fromConnectData(String topic, Schema schema, Object value) { return new byte[0]; }
            @Override public SchemaAndValue toConnectData(String topic, byte[] value) {
                if (failure.get() != null) {
                    throw failure.get();
                }
                return SchemaAndValue.NULL;
            }
        };
        var converter = new RegistryOutageRetryingConverter(delegate, clock);
        converter.configure(Map.of("registry.outage.timeout.ms", "60000"), false);
        byte[] record = {0, 0, 0, 0, 1};
        assertThrows(RetriableException.class, () -> converter.toConnectData("t", record));
        now.set(now.get().plus(Duration.ofSeconds(59)));
        assertThrows(RetriableException.class, () -> converter.toConnectData("t", record));
        now.set(now.get().plus(Duration.ofSeconds(1)));
        var fatal = assertThrows(RegistryOutageRetryingConverter.RegistryOutageTooLong.class,
                () -> converter.toConnectData("t", record));
        assertTrue(fatal.getMessage().startsWith("schema registry unavailable for 60 s"), fatal.getMessage());
        assertTrue(fatal.getMessage().contains("refused"), fatal.getMessage());

        // A success ends the outage: the next one is counted from its own start.
        failure.set(null);
        assertSame(SchemaAndValue.NULL, converter.toConnectData("t", record));
        failure.set(new IllegalStateException(new ConnectException("refused")));
        now.set(now.get().plus(Duration.ofMinutes(30)));
        assertThrows(RetriableException.class, () -> converter.toConnectData("t", record));
    }

    @Test
    void bytesThatDoNotDecodeAreNotRetried() {
        RuntimeException bad = new DataException("Unknown magic byte!");
        assertSame(bad, thrownBy(bad));
        assertFalse(RegistryOutageRetryingConverter.isRegistryOutage(new RestClientException(400)));
    }
}
