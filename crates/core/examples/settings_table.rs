//! Prints the README's settings table from the registry of settings:
//! `cargo run -p walg-core --example settings_table`, then paste it under "## Settings"
//! (a core test fails until README.md and the registry agree).
fn main() {
    print!("{}", walg_core::config::registry::markdown_table());
}
