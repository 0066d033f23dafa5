//! dunes-ledger
