//! The tool registry and the native tools (fs, shell).
