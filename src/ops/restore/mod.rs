//! Restore, by phase: which snapshot serves a target ([`select`]), then its files into a
//! directory or a stream ([`files`]).

pub mod files;
pub mod select;

pub use files::{RestoreSummary, restore_to_dir, restore_to_writer};
