//! Configuration: Flexisip-compatible INI files, parsed and validated once at start-up.
