//! dunes-ingest
