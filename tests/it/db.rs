//! Fresh databases for tests: a SQLite file in a temporary folder, or a PostgreSQL database made for the test
//! and dropped after it. PostgreSQL is used when `TIDINGS_TEST_POSTGRES_URL` names a server (any database on
//! it, e.g. `postgres://postgres@127.0.0.1:5432/postgres`); otherwise its tests print a notice and pass.

use std::cell::Cell;

use tempfile::TempDir;

/// Which store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

thread_local! {
    static CURRENT: Cell<Backend> = const { Cell::new(Backend::Sqlite) };
}

impl Backend {
    /// Makes this the backend of the test running on this thread.
    pub fn enter(self) {
        CURRENT.with(|c| c.set(self));
    }

    /// The backend of the test running on this thread.
    pub fn current() -> Self {
        CURRENT.with(Cell::get)
    }
}

/// The server URL PostgreSQL tests use, if any. In CI an unreachable server fails the run (the first
/// connection panics); on a machine without it, the tests are skipped.
pub fn postgres_server() -> Option<String> {
    std::env::var("TIDINGS_TEST_POSTGRES_URL").ok().filter(|s| !s.is_empty())
}

/// Prints why a PostgreSQL test did nothing.
pub fn skip_notice(test: &str) {
    eprintln!("note: {test}: TIDINGS_TEST_POSTGRES_URL is unset, so the PostgreSQL run is skipped");
}

/// A database that exists for one test.
pub struct TestDb {
    /// What `--database` takes.
    pub url: String,
    _dir: Option<TempDir>,
    postgres: Option<(String, String)>,
}

impl TestDb {
    /// A fresh database on `backend`; `None` for PostgreSQL when no server is configured.
    pub async fn new(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary folder");
                let url = dir.path().join("tidings.db").to_string_lossy().into_owned();
                Some(Self { url, _dir: Some(dir), postgres: None })
            }
            Backend::Postgres => {
                let server = postgres_server()?;
                let name = format!("tidings_test_{}", hex::encode(rand::random::<[u8; 8]>()));
                let mut admin = sqlx_connect(&server).await;
                sqlx::Executor::execute(&mut admin, format!("CREATE DATABASE {name}").as_str())
                    .await
                    .expect("create the test database");
                let mut url = url::Url::parse(&server).expect("TIDINGS_TEST_POSTGRES_URL is a URL");
                url.set_path(&format!("/{name}"));
                Some(Self { url: url.to_string(), _dir: None, postgres: Some((server, name)) })
            }
        }
    }
}

async fn sqlx_connect(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("TIDINGS_TEST_POSTGRES_URL is set but PostgreSQL cannot be reached: {e}"))
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((server, name)) = self.postgres.take() else { return };
        // Drop runs outside any runtime that could be blocked on, so the database is dropped from a thread of
        // its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let mut admin = sqlx_connect(&server).await;
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                let _ = sqlx::Executor::execute(&mut admin, sql.as_str()).await;
            });
        })
        .join();
    }
}

/// Declares tests that run once on SQLite and once on PostgreSQL: each `async fn name() { … }` becomes a module
/// `name` with the tests `sqlite` and `postgres`. The body finds its backend with [`Backend::current`].
#[macro_export]
macro_rules! on_both_stores {
    ($( $(#[doc = $doc:literal])* async fn $name:ident() $body:block )*) => {
        $(
            $(#[doc = $doc])*
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    $crate::db::Backend::Sqlite.enter();
                    $body
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if $crate::db::postgres_server().is_none() {
                        $crate::db::skip_notice(concat!(module_path!(), "::postgres"));
                        return;
                    }
                    $crate::db::Backend::Postgres.enter();
                    $body
                }
            }
        )*
    };
}
