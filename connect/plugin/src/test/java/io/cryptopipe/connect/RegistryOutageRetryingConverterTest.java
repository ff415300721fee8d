package io.cryptopipe.connect;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.net.ConnectException;
import java.util.Map;

import org.apache.kafka.connect.data.Schema;
import org.apache.kafka.connect.data.SchemaAndValue;
import org.apache.kafka.connect.errors.DataException;
import org.apache.kafka.connect.errors.RetriableException;
import org.apache.kafka.connect.storage.Converter;
import org.junit.jupiter.api.Test;

/** Which delegate failures Connect retries (registry outage) and which go to the dead-letter topic (bad record). */
class RegistryOutageRetryingConverterTest {

    /** Shaped like Apicurio's client exceptions: the HTTP status in getError().getErrorCode(). */
    static class RestError {
        private final Integer code;

        RestError(Integer code) {
            this.code = code;
        }

        public Integer getErrorCode() {
            return code;
        }
    }

    static class RestClientException extends RuntimeException {
        private final RestError error;

        RestClientException(Integer status) {
            super(status == null ? null : "HTTP " + status);
            this.error = new RestError(status);
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
        var converter = new RegistryOutageRetryingConverter(failingWith(delegateFailure));
        converter.configure(Map.of("delegate.class", "ignored.when.injected"), false);
        return assertThrows(RuntimeException.class, () -> converter.toConnectData("t", new byte[] {0, 0, 0, 0, 1}));
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
    void bytesThatDoNotDecodeAreNotRetried() {
        RuntimeException bad = new DataException("Unknown magic byte!");
        assertSame(bad, thrownBy(bad));
        assertFalse(RegistryOutageRetryingConverter.isRegistryOutage(new RestClientException(400)));
    }
}
