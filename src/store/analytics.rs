//! Analytics aggregates (`observe::analytics`): one row per node × minute × key, inserted in
//! batched transactions and read back by time range. The store knows nothing of their meaning;
//! the latency histogram is opaque text to it.

use futures_util::TryStreamExt;

use super::{with_pool, Store, StoreError};

/// One stored aggregate. `product` and `subscription` are `""` when the request had none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAggregate {
    pub node: String,
    /// Unix seconds of the minute's start.
    pub minute: i64,
    pub api: String,
    pub operation: String,
    pub product: String,
    pub subscription: String,
    /// 1–5 (1xx–5xx).
    pub status_class: i64,
    /// `""`, `edge`, `policy`, `backend` or `gateway`.
    pub layer: String,
    pub requests: i64,
    pub bytes_sent: i64,
    pub latency: String,
}

type RowTuple = (String, i64, String, String, String, String, i64, String, i64, i64, String);

/// Rows per INSERT statement: 11 parameters each stays far below SQLite's and PostgreSQL's
/// parameter limits.
const ROWS_PER_STATEMENT: usize = 500;

const INSERT: &str = "INSERT INTO analytics_minutes (node, minute, api, operation, product, subscription, \
                      status_class, layer, requests, bytes_sent, latency) ";

const SELECT: &str = "SELECT node, minute, api, operation, product, subscription, status_class, layer, requests, \
                      bytes_sent, latency FROM analytics_minutes WHERE minute >= $1 AND minute < $2";

impl Store {
    /// Inserts `rows` in one transaction: all of them or none.
    pub async fn insert_aggregates(&self, rows: &[StoredAggregate]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        with_pool!(&self.db, |pool| {
            let mut tx = pool.begin().await?;
            for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                let mut q = sqlx::QueryBuilder::new(INSERT);
                q.push_values(chunk, |mut b, r| {
                    b.push_bind(&r.node)
                        .push_bind(r.minute)
                        .push_bind(&r.api)
                        .push_bind(&r.operation)
                        .push_bind(&r.product)
                        .push_bind(&r.subscription)
                        .push_bind(r.status_class)
                        .push_bind(&r.layer)
                        .push_bind(r.requests)
                        .push_bind(r.bytes_sent)
                        .push_bind(&r.latency);
                });
                q.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Streams the rows of minutes in `[from, to)` (Unix seconds) to `f`, of one node or all.
    pub async fn scan_aggregates(
        &self,
        from: i64,
        to: i64,
        node: Option<&str>,
        mut f: impl FnMut(StoredAggregate) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let sql = match node {
            Some(_) => format!("{SELECT} AND node = $3"),
            None => SELECT.to_owned(),
        };
        with_pool!(&self.db, |pool| {
            let mut q = sqlx::query_as::<_, RowTuple>(&sql).bind(from).bind(to);
            if let Some(n) = node {
                q = q.bind(n);
            }
            let mut rows = q.fetch(pool);
            while let Some(t) = rows.try_next().await? {
                f(StoredAggregate {
                    node: t.0,
                    minute: t.1,
                    api: t.2,
                    operation: t.3,
                    product: t.4,
                    subscription: t.5,
                    status_class: t.6,
                    layer: t.7,
                    requests: t.8,
                    bytes_sent: t.9,
                    latency: t.10,
                })?;
            }
        });
        Ok(())
    }

    /// Deletes the rows of minutes before `before` (retention); returns how many went.
    pub async fn delete_aggregates_before(&self, before: i64) -> Result<u64, StoreError> {
        with_pool!(&self.db, |pool| {
            let done =
                sqlx::query("DELETE FROM analytics_minutes WHERE minute < $1").bind(before).execute(pool).await?;
            Ok(done.rows_affected())
        })
    }
}
