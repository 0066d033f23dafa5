//! Fast unit tests against librdkafka's in-process mock cluster. The real
//! broker tests (crash, outage, scale-out) are in the workspace's
//! `tests/kafka.rs`.

use std::collections::HashSet;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;

use super::*;
use crate::{Rejected, SourcePos};

fn cfg(brokers: &str, topic: &str, group: &str) -> KafkaConfig {
    KafkaConfig {
        enabled: true,
        brokers: brokers.into(),
        topics: vec![topic.into()],
        group_id: group.into(),
        batch_size: 100,
        batch_timeout_ms: 20,
        ..KafkaConfig::default()
    }
}

fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    committed_offsets(brokers, group, topic, partitions, Duration::from_secs(10))
        .expect("committed offsets")
        .into_iter()
        .map(|o| o.unwrap_or(-1))
        .collect()
}

async fn recv(rx: &mut tokio::sync::mpsc::Receiver<KafkaBatch>) -> KafkaBatch {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("a batch within 20 s")
        .expect("open channel")
}

#[test]
fn config_validation_and_overrides() {
    let mut c = KafkaConfig::default();
    assert!(c.validate().is_ok());
    assert_eq!(c.dlq_for("mcp.logs").as_deref(), Some("mcp.logs.dlq"));
    c.dlq_topic.clear();
    assert_eq!(c.dlq_for("mcp.logs"), None);
    c.topics.clear();
    assert!(c.validate().unwrap_err().contains("topics"));
    let c = KafkaConfig {
        auto_offset_reset: "smallest".into(),
        ..KafkaConfig::default()
    };
    assert!(c.validate().unwrap_err().contains("auto_offset_reset"));
    let mut c = KafkaConfig::default();
    c.consumer.insert("fetch.wait.max.ms".into(), "5".into());
    let cc = c.consumer_config("x");
    assert_eq!(cc.get("fetch.wait.max.ms"), Some("5"));
    assert_eq!(cc.get("enable.auto.commit"), Some("false"));
    assert_eq!(cc.get("group.instance.id"), None);
    c.static_membership = true;
    assert_eq!(c.consumer_config("x").get("group.instance.id"), Some("x"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_committed_only_when_the_caller_says_so() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("in", 2, 1).expect("topic");
    let brokers = cluster.bootstrap_servers();
    let c = cfg(&brokers, "in", "g1");
    let sink = KafkaSink::new(&c, "test").expect("sink");
    for i in 0..250 {
        sink.send_raw("in", &format!("k{}", i % 7), format!("m{i}").as_bytes())
            .await
            .expect("produce");
    }
    let c = KafkaConfig {
        max_in_flight: 1,
        ..c
    };
    let (handle, mut rx) = KafkaSource::start(&c, "t1").expect("source");
    let first = recv(&mut rx).await;
    // Backpressure: with one batch in flight, nothing more is handed over
    // until it is committed; and nothing is committed before that.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        rx.try_recv().is_err(),
        "a second batch arrived before the first was committed"
    );
    let b = brokers.clone();
    let before = tokio::task::spawn_blocking(move || committed(&b, "g1", "in", 2))
        .await
        .expect("join");
    assert_eq!(
        before,
        vec![-1, -1],
        "offsets committed before the caller said so"
    );
    let mut seen = HashSet::new();
    let mut batch = first;
    loop {
        assert!(batch.records.len() <= 100);
        assert_eq!(batch.records.len(), batch.timestamps_ms.len());
        for r in &batch.records {
            let SourcePos::Kafka {
                topic,
                partition,
                offset,
            } = &r.source
            else {
                panic!("kafka source pos expected");
            };
            assert_eq!(&**topic, "in");
            assert!(seen.insert((*partition, *offset)), "duplicate delivery");
        }
        handle.commit(&batch).expect("commit");
        if seen.len() == 250 {
            break;
        }
        batch = recv(&mut rx).await;
    }
    let after = tokio::task::spawn_blocking(move || committed(&brokers, "g1", "in", 2))
        .await
        .expect("join");
    assert_eq!(
        after.iter().sum::<i64>(),
        250,
        "every offset committed: {after:?}"
    );
    handle.request_stop();
    handle.join();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_carry_reason_and_origin_headers() {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("in", 1, 1).expect("topic");
    cluster.create_topic("in.dlq", 1, 1).expect("topic");
    let brokers = cluster.bootstrap_servers();
    let c = cfg(&brokers, "in", "g2");
    let sink = KafkaSink::new(&c, "test").expect("sink");
    let rejected = vec![
        Rejected {
            reason: "invalid JSON at line 1 column 2".into(),
            source: SourcePos::Kafka {
                topic: "in".into(),
                partition: 0,
                offset: 41,
            },
            raw: b"{oops".to_vec().into(),
        },
        Rejected {
            reason: "from a file".into(),
            source: SourcePos::Stdin { line: 3 },
            raw: b"x".to_vec().into(),
        },
    ];
    assert_eq!(sink.send_dead_letters(&rejected).await.expect("dlq"), 1);
    let dlq: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "dlq-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    dlq.subscribe(&["in.dlq"]).expect("subscribe");
    let m = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Some(Ok(m)) = dlq.poll(Duration::from_millis(200)) {
                return Some(m.detach());
            }
        }
        None
    })
    .await
    .expect("join")
    .expect("a DLQ message");
    assert_eq!(m.payload(), Some(&b"{oops"[..]));
    let h = m.headers().expect("headers");
    let get = |k: &str| {
        h.iter()
            .find(|x| x.key == k)
            .and_then(|x| x.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(
        get("dunes-reason").as_deref(),
        Some("invalid JSON at line 1 column 2")
    );
    assert_eq!(get("dunes-topic").as_deref(), Some("in"));
    assert_eq!(get("dunes-partition").as_deref(), Some("0"));
    assert_eq!(get("dunes-offset").as_deref(), Some("41"));
}
