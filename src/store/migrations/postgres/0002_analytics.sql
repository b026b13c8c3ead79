-- Per-minute analytics aggregates (observe::analytics). Kept in step with
-- ../sqlite/0002_analytics.sql. Rows are only inserted: a key may have several rows for one
-- node and minute (a late request, a restart mid-minute) and queries add them up.
CREATE TABLE analytics_minutes (
    node          TEXT NOT NULL,
    minute        BIGINT NOT NULL,
    api           TEXT NOT NULL,
    operation     TEXT NOT NULL,
    product       TEXT NOT NULL,
    subscription  TEXT NOT NULL,
    status_class  BIGINT NOT NULL,
    layer         TEXT NOT NULL,
    requests      BIGINT NOT NULL,
    bytes_sent    BIGINT NOT NULL,
    latency       TEXT NOT NULL
);
CREATE INDEX analytics_minutes_minute ON analytics_minutes (minute);
