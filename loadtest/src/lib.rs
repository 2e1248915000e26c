//! Placeholder: the load generator is being written.
