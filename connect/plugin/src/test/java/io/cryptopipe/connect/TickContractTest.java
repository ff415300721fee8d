package io.cryptopipe.connect;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Clock;
import java.time.Instant;
import java.time.ZoneOffset;
import java.util.Date;
import java.util.Map;
import java.util.function.Consumer;

import org.apache.kafka.connect.data.Schema;
import org.apache.kafka.connect.data.SchemaBuilder;
import org.apache.kafka.connect.data.Struct;
import org.apache.kafka.connect.data.Timestamp;
import org.apache.kafka.connect.errors.DataException;
import org.apache.kafka.connect.sink.SinkRecord;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** The contract's rules one by one, on the value shape the Avro converter produces for schemas/crypto_tick.avsc. */
class TickContractTest {

    static final Instant NOW = Instant.parse("2026-11-25T12:00:00Z");
    static final Schema TICK = SchemaBuilder.struct().name("io.cryptopipe.CryptoTick")
            .field("symbol", Schema.STRING_SCHEMA)
            .field("price", Schema.FLOAT64_SCHEMA)
            .field("event_time", Timestamp.SCHEMA)
            .field("volume", Schema.OPTIONAL_FLOAT64_SCHEMA)
            .field("feed", Schema.STRING_SCHEMA)
            .field("produced_at", Timestamp.SCHEMA)
            .field("producer_id", Schema.STRING_SCHEMA)
            .field("sequence", Schema.INT64_SCHEMA)
            .build();

    final TickContract<SinkRecord> contract = new TickContract<>(Clock.fixed(NOW, ZoneOffset.UTC));

    TickContractTest() {
        // schemas/tick_contract.json's limits, as connect/crypto-prices-jdbc-sink.json passes them
        contract.configure(Map.of("min.event.time", "2009-01-03T00:00:00Z", "max.future.seconds", "300",
                "price.min", "1e-9", "price.max", "1e9", "volume.min", "0", "volume.max", "1e15",
                "symbol.pattern", "^[A-Z0-9][A-Z0-9.=^-]{0,31}$", "feeds", "STREAM,POLL,JITTER,REPLAY"));
    }

    static SinkRecord record(Consumer<Struct> change) {
        Struct tick = new Struct(TICK).put("symbol", "BTC-USD").put("price", 97000.5)
                .put("event_time", Date.from(NOW.minusSeconds(1))).put("volume", 0.25).put("feed", "STREAM")
                .put("produced_at", Date.from(NOW)).put("producer_id", "host:1").put("sequence", 1L);
        change.accept(tick);
        return new SinkRecord("crypto.ticks", 0, Schema.STRING_SCHEMA, "BTC-USD", TICK, tick, 42L);
    }

    String reason(SinkRecord record) {
        DataException e = assertThrows(DataException.class, () -> contract.apply(record));
        assertTrue(e.getMessage().startsWith("tick contract violated: "), e.getMessage());
        return e.getMessage().split(": ")[1];
    }

    @Test
    void aValidTickPassesUnchanged() {
        SinkRecord good = record(t -> { });
        assertSame(good, contract.apply(good));
    }

    @Test
    void aTickWithoutVolumeIsValid() {
        SinkRecord noVolume = record(t -> t.put("volume", null));
        assertSame(noVolume, contract.apply(noVolume));
    }

    @ParameterizedTest
    @ValueSource(doubles = {Double.NaN, Double.POSITIVE_INFINITY, Double.NEGATIVE_INFINITY, -5.0, 0.0, -0.0,
            Double.MIN_VALUE, 9.999999999999999e-10, 1.0000000000000002e9, 1e308})
    void aPriceThatIsNotFiniteWithinTheRangeIsRejected(double price) {
        assertEquals("bad_price", reason(record(t -> t.put("price", price))));
    }

    @ParameterizedTest
    @ValueSource(doubles = {1e-9, 1e9, 0.00001234})
    void aPriceAtTheLimitsIsValid(double price) {
        SinkRecord edge = record(t -> t.put("price", price));
        assertSame(edge, contract.apply(edge));
    }

    @ParameterizedTest
    @ValueSource(doubles = {Double.NaN, Double.POSITIVE_INFINITY, -3.0, -Double.MIN_VALUE, 1.0000000000000002e15, 1e308})
    void aVolumeThatIsNotFiniteWithinTheRangeIsRejected(double volume) {
        assertEquals("bad_volume", reason(record(t -> t.put("volume", volume))));
    }

    @Test
    void oneStepBeyondEachLimitIsRejected() {
        assertEquals("bad_price", reason(record(t -> t.put("price", Math.nextDown(1e-9)))));
        assertEquals("bad_price", reason(record(t -> t.put("price", Math.nextUp(1e9)))));
        assertEquals("bad_volume", reason(record(t -> t.put("volume", Math.nextUp(1e15)))));
        assertEquals("bad_volume", reason(record(t -> t.put("volume", Math.nextDown(-0.0)))));
    }

    @ParameterizedTest
    @ValueSource(doubles = {0.0, -0.0, 1e15})
    void aVolumeAtTheLimitsIsValid(double volume) {
        SinkRecord edge = record(t -> t.put("volume", volume));
        assertSame(edge, contract.apply(edge));
    }

    @ParameterizedTest
    @ValueSource(strings = {"MOON", "stream", "", "STREAM "})
    void aFeedTheSchemaDoesNotNameIsRejected(String feed) {
        assertEquals("bad_feed", reason(record(t -> t.put("feed", feed))));
    }

    @Test
    void anEventTimeBeforeTheMinimumIsImplausible() {
        assertEquals("implausible_time", reason(record(t -> t.put("event_time", Date.from(Instant.parse("2009-01-02T23:59:59Z"))))));
    }

    @Test
    void anEventTimeBeyondTheMarginIsInTheFuture() {
        assertSame(SinkRecord.class, contract.apply(record(t -> t.put("event_time", Date.from(NOW.plusSeconds(300))))).getClass());
        assertEquals("future_time", reason(record(t -> t.put("event_time", Date.from(NOW.plusSeconds(301))))));
        assertEquals("future_time", reason(record(t -> t.put("event_time", Date.from(Instant.parse("2200-01-01T00:00:00Z"))))));
    }

    @ParameterizedTest
    @ValueSource(strings = {"", "A-VERY-LONG-SYMBOL-NAME-OVER-32-CHARS", "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456",
            "BTC\u0000USD", "BTC\nUSD", "BTC-USD\n", "btc-usd", "-BTC", ".BTC", "BTC USD", "BTC_USD", "BTC-US\u00c9",
            "\uff22TC-USD", "BTC/USD"})
    void aSymbolThatDoesNotMatchThePatternIsRejected(String symbol) {
        assertEquals("bad_symbol", reason(record(t -> t.put("symbol", symbol))));
    }

    @ParameterizedTest
    @ValueSource(strings = {"B", "BTC-USD", "1INCH-USD", "BRK.B", "EURUSD=X", "GC=F", "X^Y", "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"})
    void aSymbolMatchingThePatternIsValid(String symbol) {
        SinkRecord edge = record(t -> t.put("symbol", symbol));
        assertSame(edge, contract.apply(edge));
    }

    @Test
    void aNulCharacterInAnyStringIsUnstorable() {
        assertEquals("unstorable_value", reason(record(t -> t.put("producer_id", "host\u0000:1"))));
    }

    @Test
    void aLineageTimeOutsideTheStorableYearsIsUnstorable() {
        assertEquals("unstorable_value", reason(record(t -> t.put("produced_at", new Date(Long.MAX_VALUE / 2)))));
    }

    @Test
    void aRecordWithoutAStructValueIsMalformed() {
        SinkRecord tombstone = new SinkRecord("crypto.ticks", 0, Schema.STRING_SCHEMA, "BTC-USD", null, null, 1L);
        assertEquals("malformed", reason(tombstone));
    }

    @Test
    void aValueWithoutTheContractFieldsIsMalformed() {
        Schema other = SchemaBuilder.struct().field("symbol", Schema.STRING_SCHEMA).build();
        SinkRecord record = new SinkRecord("crypto.ticks", 0, null, null, other, new Struct(other).put("symbol", "X"), 1L);
        assertEquals("malformed", reason(record));
    }
}
