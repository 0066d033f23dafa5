//! Where records come from. Files and stdin are read on blocking threads
//! ([`file`]); HTTP bodies arrive through the API's ingest channel (the
//! driver answers each request after its batch is durable); Kafka batches
//! carry the offsets to commit once their batch is durable ([`kafka`]).

pub(crate) mod file;
pub(crate) mod kafka;

use dunes_ingest::RawRecord;

/// What a file or stdin source hands to the driver.
pub(crate) enum Work {
    Chunk(Vec<RawRecord>),
    Done {
        source: String,
        error: Option<String>,
    },
}
