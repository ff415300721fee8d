package io.cryptopipe.connect;

import java.time.Clock;
import java.time.Instant;
import java.time.format.DateTimeParseException;
import java.util.Date;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.regex.Pattern;
import java.util.regex.PatternSyntaxException;

import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.common.config.ConfigException;
import org.apache.kafka.connect.connector.ConnectRecord;
import org.apache.kafka.connect.data.Field;
import org.apache.kafka.connect.data.Schema;
import org.apache.kafka.connect.data.Struct;
import org.apache.kafka.connect.data.Timestamp;
import org.apache.kafka.connect.errors.DataException;
import org.apache.kafka.connect.transforms.Transformation;

/**
 * The tick contract, enforced for every writer of the ticks topic: a record that breaks it fails this
 * transform with a {@link DataException} whose message starts with "tick contract violated: REASON:",
 * so Connect (errors.tolerance=all) puts the original record on the dead-letter topic with that message
 * in its headers and the task goes on with the next record. Valid records pass through unchanged.
 *
 * <p>The limits are schemas/tick_contract.json's, given in the connector config (the defaults are the same
 * values); tests/test_contract_definition.py checks that they agree.
 *
 * <p>Reasons: {@code malformed} (no value, not a struct, a contract field missing or of another type),
 * {@code bad_symbol} (not a whole match of the pattern), {@code bad_price} (not finite within the range),
 * {@code bad_volume} (not null, or not finite within the range), {@code bad_feed} (not one of the
 * schema's feeds), {@code implausible_time} (before the
 * configured minimum), {@code future_time} (more than the configured margin ahead of this worker's
 * clock), {@code unstorable_value} (a string with a NUL character or a timestamp outside 0001-9999,
 * which PostgreSQL would refuse and so fail the sink's whole batch).
 */
public class TickContract<R extends ConnectRecord<R>> implements Transformation<R> {

    public static final String MIN_EVENT_TIME = "min.event.time";
    public static final String MAX_FUTURE_SECONDS = "max.future.seconds";
    public static final String PRICE_MIN = "price.min";
    public static final String PRICE_MAX = "price.max";
    public static final String VOLUME_MIN = "volume.min";
    public static final String VOLUME_MAX = "volume.max";
    public static final String SYMBOL_PATTERN = "symbol.pattern";
    public static final String FEEDS = "feeds";

    static final ConfigDef CONFIG_DEF = new ConfigDef()
            .define(MIN_EVENT_TIME, ConfigDef.Type.STRING, "2009-01-03T00:00:00Z", ConfigDef.Importance.HIGH,
                    "Earliest plausible event_time, ISO-8601 instant (default: the first Bitcoin block).")
            .define(MAX_FUTURE_SECONDS, ConfigDef.Type.LONG, 300L, ConfigDef.Range.atLeast(0), ConfigDef.Importance.HIGH,
                    "How far ahead of this worker's clock an event_time may be, in seconds.")
            .define(PRICE_MIN, ConfigDef.Type.DOUBLE, 1e-9, ConfigDef.Importance.HIGH, "Lowest accepted price (inclusive).")
            .define(PRICE_MAX, ConfigDef.Type.DOUBLE, 1e9, ConfigDef.Importance.HIGH, "Highest accepted price (inclusive).")
            .define(VOLUME_MIN, ConfigDef.Type.DOUBLE, 0.0, ConfigDef.Importance.HIGH, "Lowest accepted volume (inclusive).")
            .define(VOLUME_MAX, ConfigDef.Type.DOUBLE, 1e15, ConfigDef.Importance.HIGH, "Highest accepted volume (inclusive).")
            .define(SYMBOL_PATTERN, ConfigDef.Type.STRING, "^[A-Z0-9][A-Z0-9.=^-]{0,31}$", ConfigDef.Importance.HIGH,
                    "Regular expression the whole symbol must match.")
            .define(FEEDS, ConfigDef.Type.LIST, List.of("STREAM", "POLL", "JITTER", "REPLAY"), ConfigDef.Importance.HIGH,
                    "Accepted values of the feed field.");

    /** PostgreSQL's timestamptz goes further, but nothing outside these years is a real tick or lineage time. */
    private static final long STORABLE_FROM_MS = Instant.parse("0001-01-01T00:00:00Z").toEpochMilli();
    private static final long STORABLE_TO_MS = Instant.parse("9999-12-31T23:59:59Z").toEpochMilli();

    private final Clock clock;
    private long minEventTimeMs;
    private long maxFutureMs;
    private double priceMin;
    private double priceMax;
    private double volumeMin;
    private double volumeMax;
    private Pattern symbolPattern;
    private Set<String> feeds;

    public TickContract() {
        this(Clock.systemUTC());
    }

    TickContract(Clock clock) {
        this.clock = clock;
    }

    @Override
    public void configure(Map<String, ?> props) {
        var config = new org.apache.kafka.common.config.AbstractConfig(CONFIG_DEF, props);
        try {
            minEventTimeMs = Instant.parse(config.getString(MIN_EVENT_TIME)).toEpochMilli();
        } catch (DateTimeParseException e) {
            throw new ConfigException(MIN_EVENT_TIME, config.getString(MIN_EVENT_TIME), "not an ISO-8601 instant");
        }
        maxFutureMs = config.getLong(MAX_FUTURE_SECONDS) * 1000L;
        priceMin = config.getDouble(PRICE_MIN);
        priceMax = config.getDouble(PRICE_MAX);
        volumeMin = config.getDouble(VOLUME_MIN);
        volumeMax = config.getDouble(VOLUME_MAX);
        if (!(priceMin <= priceMax && volumeMin <= volumeMax)) {
            throw new ConfigException("the price and volume ranges need min <= max");
        }
        try {
            symbolPattern = Pattern.compile(config.getString(SYMBOL_PATTERN));
        } catch (PatternSyntaxException e) {
            throw new ConfigException(SYMBOL_PATTERN, config.getString(SYMBOL_PATTERN), e.getDescription());
        }
        feeds = Set.copyOf(config.getList(FEEDS));
    }

    @Override
    public R apply(R record) {
        if (!(record.value() instanceof Struct tick)) {
            throw violated("malformed", record.value() == null ? "the record has no value" : "the value is not a struct");
        }
        checkSymbol(string(tick, "symbol"));
        double price = number(tick, "price");
        if (!(price >= priceMin && price <= priceMax)) {  // NaN fails both comparisons
            throw violated("bad_price", "price " + price + " is not within " + priceMin + " .. " + priceMax);
        }
        Double volume = tick.schema().field("volume") == null ? null : numberOrNull(tick, "volume");
        if (volume != null && !(volume >= volumeMin && volume <= volumeMax)) {
            throw violated("bad_volume", "volume " + volume + " is not null or within " + volumeMin + " .. " + volumeMax);
        }
        String feed = string(tick, "feed");
        if (!feeds.contains(feed)) {
            throw violated("bad_feed", "feed " + printable(feed) + " is not one of " + String.join(", ", feeds.stream().sorted().toList()));
        }
        long eventTime = epochMillis(tick, "event_time");
        if (eventTime < minEventTimeMs) {
            throw violated("implausible_time", "event_time " + instant(eventTime) + " is before " + instant(minEventTimeMs));
        }
        long latest = clock.millis() + maxFutureMs;
        if (eventTime > latest) {
            throw violated("future_time", "event_time " + instant(eventTime) + " is more than " + maxFutureMs / 1000
                    + " s ahead of the worker's clock (" + instant(clock.millis()) + ")");
        }
        checkStorable(tick);
        return record;
    }

    private void checkSymbol(String symbol) {
        if (!symbolPattern.matcher(symbol).matches()) {
            throw violated("bad_symbol", "symbol " + printable(symbol) + " does not match " + symbolPattern.pattern());
        }
    }

    /** For a message: at most 64 characters, anything outside printable ASCII as a \\uXXXX escape. */
    static String printable(String s) {
        StringBuilder out = new StringBuilder("\"");
        s.codePoints().limit(64).forEach(c -> {
            if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"') {
                out.appendCodePoint(c);
            } else {
                out.append(String.format("\\u%04x", c));
            }
        });
        return out.append(s.codePointCount(0, s.length()) > 64 ? "...\"" : "\"").toString();
    }

    /** Every field, including ones a later schema version adds: values PostgreSQL cannot store. */
    private static void checkStorable(Struct tick) {
        for (Field field : tick.schema().fields()) {
            Object value = tick.get(field);
            if (value instanceof String s && s.indexOf('\0') >= 0) {
                throw violated("unstorable_value", field.name() + " contains a NUL character");
            }
            if (value instanceof Date d && (d.getTime() < STORABLE_FROM_MS || d.getTime() > STORABLE_TO_MS)) {
                throw violated("unstorable_value", field.name() + " " + d.getTime() + " ms is outside the years 0001-9999");
            }
        }
    }

    private static Object field(Struct tick, String name) {
        if (tick.schema().field(name) == null) {
            throw violated("malformed", "no field " + name);
        }
        return tick.get(name);
    }

    private static String string(Struct tick, String name) {
        if (field(tick, name) instanceof String s) {
            return s;
        }
        throw violated("malformed", name + " is not a string");
    }

    private static double number(Struct tick, String name) {
        Object value = field(tick, name);
        if (value instanceof Number n) {
            return n.doubleValue();
        }
        throw violated("malformed", name + " is not a number");
    }

    private static Double numberOrNull(Struct tick, String name) {
        Object value = field(tick, name);
        if (value == null) {
            return null;
        }
        if (value instanceof Number n) {
            return n.doubleValue();
        }
        throw violated("malformed", name + " is not a number");
    }

    private static long epochMillis(Struct tick, String name) {
        Object value = field(tick, name);
        Schema schema = tick.schema().field(name).schema();
        if (value instanceof Date d && Timestamp.LOGICAL_NAME.equals(schema.name())) {
            return d.getTime();
        }
        if (value instanceof Long l) {
            return l;
        }
        throw violated("malformed", name + " is not a timestamp");
    }

    private static String instant(long epochMillis) {
        try {
            return Instant.ofEpochMilli(epochMillis).toString();
        } catch (RuntimeException e) {
            return epochMillis + " ms";
        }
    }

    static DataException violated(String reason, String detail) {
        return new DataException("tick contract violated: " + reason + ": " + detail);
    }

    @Override
    public ConfigDef config() {
        return CONFIG_DEF;
    }

    @Override
    public void close() {
    }
}
