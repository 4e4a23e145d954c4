//! sqlx's `migrate!` reads `migrations/postgres` while the crate compiles; without this, cargo would not
//! compile it again when a migration is added there.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
