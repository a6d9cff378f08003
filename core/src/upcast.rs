//! Upcasters.
