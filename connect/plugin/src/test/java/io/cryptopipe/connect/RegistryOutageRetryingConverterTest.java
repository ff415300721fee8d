package io.cryptopipe.connect;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayInputStream;
import java.io.EOFException;
import java.io.IOException;
import java.net.ConnectException;
import java.net.SocketTimeoutException;
import java.net.UnknownHostException;
import java.nio.charset.StandardCharsets;
import java.time.Clock;
import java.time.Duration;
import java.time.Instant;
import java.time.ZoneOffset;
import java.util.Map;
import java.util.concurrent.atomic.AtomicReference;

import com.fasterxml.jackson.core.JsonParseException;
import io.apicurio.registry.rest.client.exception.NotFoundException;
import io.apicurio.registry.rest.client.impl.ErrorHandler;
import org.apache.kafka.connect.data.Schema;
import org.apache.kafka.connect.data.SchemaAndValue;
import org.apache.kafka.connect.errors.DataException;
import org.apache.kafka.connect.errors.RetriableException;
import org.apache.kafka.connect.storage.Converter;
import org.junit.jupiter.api.Test;

/** Which delegate failures Connect retries (registry outage) and which go to the dead-letter topic (bad record). */
class RegistryOutageRetryingConverterTest {

    /** Apicurio 2.6's own client error handler: it turns an HTTP answer, or an I/O error that got none, into
     *  the exception the client throws, so the converter is tested against the real types, not look-alikes. */
    static final ErrorHandler CLIENT = new ErrorHandler();

    /** What the client throws when the registry answered {@code status} with this error body. */
    static RuntimeException answered(int status, String name) {
        String body = "{\"error_code\":" + status + ",\"message\":\"HTTP " + status + "\",\"name\":\"" + name + "\"}";
        return CLIENT.handleErrorResponse(new ByteArrayInputStream(body.getBytes(StandardCharsets.UTF_8)), status);
    }

    static RuntimeException answered(int status) {
        return answered(status, "RestError");
    }

    /** What the client throws when its request got no HTTP answer at all. */
    static RuntimeException noAnswer(Exception ioError) {
        return CLIENT.parseError(ioError);
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
        assertInstanceOf(RetriableException.class, thrownBy(noAnswer(new ConnectException("Connection refused"))));
    }

    @Test
    void aServerErrorOfTheRegistryIsRetried() {
        assertInstanceOf(RetriableException.class, thrownBy(answered(503)));
    }

    @Test
    void anIdTheRegistryNeverIssuedIsNotRetried() {
        RuntimeException notFound = answered(404, "ContentNotFoundException");
        assertInstanceOf(NotFoundException.class, notFound);  // the client's own mapping of the error name
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
        for (Exception ioError : new Exception[] {new ConnectException("refused"),
                new java.net.http.HttpConnectTimeoutException("connect timed out"), new IOException("stream closed")}) {
            assertInstanceOf(RetriableException.class, thrownBy(noAnswer(ioError)), ioError.toString());
        }
    }

    @Test
    void aStatuslessClientErrorThatIsNotAConnectionFailureIsNotRetried() {
        RuntimeException parse = CLIENT.parseInputSerializingError(new JsonParseException(null, "Unexpected character"));
        assertSame(parse, thrownBy(parse));
    }

    @Test
    void rateLimitsAndTimeoutsOfTheRegistryAreRetriedOtherClientErrorsAreNot() {
        assertInstanceOf(RetriableException.class, thrownBy(answered(429)));
        assertInstanceOf(RetriableException.class, thrownBy(answered(408)));
        assertInstanceOf(RetriableException.class, thrownBy(answered(500)));
        for (int code : new int[] {400, 409, 422}) {
            RuntimeException refused = answered(code);
            assertSame(refused, thrownBy(refused));
        }
    }

    @Test
    void refusedCredentialsFailTheTaskAtOnceInsteadOfDeadLetteringEveryRecord() {
        for (RuntimeException denied : new RuntimeException[] {answered(401), answered(403),
                new IllegalStateException(answered(401))}) {
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
        assertFalse(RegistryOutageRetryingConverter.isRegistryOutage(answered(400)));
    }
}
