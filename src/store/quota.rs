//! Quota counters that survive restarts (APIM `quota` / `quota-by-key`): one row per counter
//! key with the start of its current period and what was used in it. The rate-limit side keeps
//! live counts in memory (or Redis) and writes them here in batches; it decides the key format and
//! the time unit of `period_start`.

use serde::Serialize;

use super::{with_pool, Store, StoreError};

/// One counter: calls and bytes used since `period_start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuotaCounter {
    pub key: String,
    pub period_start: i64,
    pub calls: i64,
    pub bytes: i64,
}

const UPSERT_SET: &str = "INSERT INTO quota_counters (key, period_start, calls, bytes) VALUES ($1, $2, $3, $4) \
                          ON CONFLICT (key) DO UPDATE SET period_start = excluded.period_start, \
                          calls = excluded.calls, bytes = excluded.bytes";

/// Adds a delta; a delta for a newer period starts that period, one for an older period (a late
/// flush) is dropped.
const UPSERT_ADD: &str = "INSERT INTO quota_counters (key, period_start, calls, bytes) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (key) DO UPDATE SET \
       calls = CASE WHEN excluded.period_start > quota_counters.period_start THEN excluded.calls \
                    WHEN excluded.period_start = quota_counters.period_start THEN quota_counters.calls + excluded.calls \
                    ELSE quota_counters.calls END, \
       bytes = CASE WHEN excluded.period_start > quota_counters.period_start THEN excluded.bytes \
                    WHEN excluded.period_start = quota_counters.period_start THEN quota_counters.bytes + excluded.bytes \
                    ELSE quota_counters.bytes END, \
       period_start = CASE WHEN excluded.period_start > quota_counters.period_start THEN excluded.period_start \
                    ELSE quota_counters.period_start END \
     RETURNING period_start, calls, bytes";

impl Store {
    /// The stored counter for `key`, if any.
    pub async fn load_quota(&self, key: &str) -> Result<Option<QuotaCounter>, StoreError> {
        with_pool!(&self.db, |pool| {
            let row: Option<(i64, i64, i64)> =
                sqlx::query_as("SELECT period_start, calls, bytes FROM quota_counters WHERE key = $1")
                    .bind(key)
                    .fetch_optional(pool)
                    .await?;
            Ok(row.map(|(period_start, calls, bytes)| QuotaCounter { key: key.to_owned(), period_start, calls, bytes }))
        })
    }

    /// Writes counters as given (last writer wins), all in one transaction. For one node that
    /// owns its counters.
    pub async fn save_quotas(&self, batch: &[QuotaCounter]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        with_pool!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            for c in batch {
                sqlx::query(UPSERT_SET)
                    .bind(&c.key)
                    .bind(c.period_start)
                    .bind(c.calls)
                    .bind(c.bytes)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Adds usage deltas (`calls`/`bytes` counted since the last flush) and returns the totals,
    /// in one transaction. For several nodes sharing counters on PostgreSQL: no increment is
    /// lost, whatever the order of flushes.
    pub async fn add_quotas(&self, deltas: &[QuotaCounter]) -> Result<Vec<QuotaCounter>, StoreError> {
        let mut out = Vec::with_capacity(deltas.len());
        if deltas.is_empty() {
            return Ok(out);
        }
        with_pool!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            for d in deltas {
                let (period_start, calls, bytes): (i64, i64, i64) = sqlx::query_as(UPSERT_ADD)
                    .bind(&d.key)
                    .bind(d.period_start)
                    .bind(d.calls)
                    .bind(d.bytes)
                    .fetch_one(&mut *tx)
                    .await?;
                out.push(QuotaCounter { key: d.key.clone(), period_start, calls, bytes });
            }
            tx.commit().await?;
        });
        Ok(out)
    }
}

/// The store keeps in-process quota counters across restarts (`quota`, `quota-by-key`).
///
/// The rate-limit engine identifies a period by its end; the table's `period_start` column holds
/// that end in Unix milliseconds (-1 for a quota that never renews). A record of an ended period
/// is ignored by the engine when loaded, so nothing here needs to expire.
impl crate::ratelimit::quota::QuotaPersistence for Store {
    fn load_quota<'a>(
        &'a self,
        key: &'a str,
    ) -> crate::ratelimit::quota::PersistFuture<'a, Option<crate::ratelimit::quota::QuotaRecord>> {
        Box::pin(async move {
            let found = Store::load_quota(self, key).await?;
            Ok(found.map(|c| crate::ratelimit::quota::QuotaRecord {
                period_end_ms: u64::try_from(c.period_start).ok(),
                calls: u64::try_from(c.calls).unwrap_or(0),
                bytes: u64::try_from(c.bytes).unwrap_or(0),
            }))
        })
    }

    fn save_quotas(
        &self,
        batch: Vec<(String, crate::ratelimit::quota::QuotaRecord)>,
    ) -> crate::ratelimit::quota::PersistFuture<'_, ()> {
        Box::pin(async move {
            let rows: Vec<QuotaCounter> = batch
                .into_iter()
                .map(|(key, r)| QuotaCounter {
                    key,
                    period_start: r.period_end_ms.and_then(|v| i64::try_from(v).ok()).unwrap_or(-1),
                    calls: i64::try_from(r.calls).unwrap_or(i64::MAX),
                    bytes: i64::try_from(r.bytes).unwrap_or(i64::MAX),
                })
                .collect();
            Store::save_quotas(self, &rows).await?;
            Ok(())
        })
    }
}
