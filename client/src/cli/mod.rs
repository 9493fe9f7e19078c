//! The `sotto` subcommands that have outgrown `main.rs`.

pub mod rooms;
