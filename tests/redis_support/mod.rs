//! Helpers for tests against the real Redis: unique key prefixes, clean-up, and a TCP proxy the
//! test can cut to simulate an outage without touching the machine's Redis.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub const REDIS: &str = "redis://127.0.0.1:6379";

/// A key prefix no other test run uses.
pub fn prefix(test: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_nanos();
    format!("gatehouse-test:{test}:{}:{nanos}:", std::process::id())
}

/// A connection to the real Redis; panics (fails the test) when it is not running.
pub async fn conn() -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(REDIS).expect("redis url");
    tokio::time::timeout(std::time::Duration::from_secs(3), client.get_multiplexed_async_connection())
        .await
        .expect("Redis at 127.0.0.1:6379 did not answer in 3 s")
        .expect("Redis at 127.0.0.1:6379 is required for this test")
}

/// Deletes every key under `prefix`.
pub async fn cleanup(prefix: &str) {
    let mut c = conn().await;
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut c).await.expect("KEYS");
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL").arg(keys).query_async(&mut c).await.expect("DEL");
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Pass,
    Blackhole,
}

struct State {
    mode: Mode,
    pipes: Vec<JoinHandle<()>>,
    held: Vec<TcpStream>,
}

/// A TCP proxy in front of the real Redis that the test can cut.
pub struct TcpCut {
    port: u16,
    state: Arc<Mutex<State>>,
    accept: JoinHandle<()>,
}

impl TcpCut {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(State { mode: Mode::Pass, pipes: Vec::new(), held: Vec::new() }));
        let st = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut s = st.lock();
                match s.mode {
                    Mode::Blackhole => s.held.push(client),
                    Mode::Pass => s.pipes.push(tokio::spawn(async move {
                        if let Ok(mut upstream) = TcpStream::connect("127.0.0.1:6379").await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                        }
                    })),
                }
            }
        });
        TcpCut { port, state, accept }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Existing connections are cut; new ones are accepted and never answered.
    pub fn blackhole(&self) {
        let mut s = self.state.lock();
        s.mode = Mode::Blackhole;
        for p in s.pipes.drain(..) {
            p.abort();
        }
    }

    /// Connections go through to Redis again.
    pub fn restore(&self) {
        let mut s = self.state.lock();
        s.mode = Mode::Pass;
        s.held.clear();
    }

    /// Stops listening: connections are refused.
    pub fn refuse(&self) {
        self.accept.abort();
        self.blackhole();
    }
}

impl Drop for TcpCut {
    fn drop(&mut self) {
        self.refuse();
    }
}
