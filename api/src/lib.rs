//! dunes-api
