//! PostgreSQL backend (being built).
