//! The [`KafkaLog`]: connecting, and appending through one idempotent producer.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, info};

use super::admin::KafkaAdmin;
use super::config::{KafkaOptions, KafkaUrl, TopicNames, parse_url};
use super::consumer::{ConsumerState, KafkaConsumer};
use super::error::classify;
use super::{BACKEND, LogContext, client_config, millis};
use crate::BackendError;
use crate::event_log::{EventLog, LogConsumer, Record, Rewound, Topic};

/// The Kafka event log: one idempotent producer shared by all appends, one consumer per
/// [`EventLog::subscribe`].
pub struct KafkaLog {
    producer: FutureProducer<LogContext>,
    admin: KafkaAdmin,
    bootstrap: String,
    options: KafkaOptions,
}

impl KafkaLog {
    /// Connects to the cluster at `url` (see the module docs for its parameters, which
    /// override `options`), creating missing topics unless `create_topics` is off.
    pub async fn connect(url: &str, options: KafkaOptions) -> Result<Self, BackendError> {
        let KafkaUrl { bootstrap, options } = parse_url(url, &options)?;
        let admin = KafkaAdmin::new(&bootstrap, &options)?;
        let producer = client_config(&bootstrap, &options)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", millis(options.delivery_timeout))
            .set("request.timeout.ms", millis(options.request_timeout))
            .create_with_context(LogContext::default())
            .map_err(|e| classify(&e, "creating the Kafka producer"))?;
        if options.create_topics {
            for topic in options.topics.all() {
                let report = admin.ensure_topic(topic, options.partitions).await?;
                debug!(%report, "Kafka topic ready");
            }
        }
        info!(bootstrap = %bootstrap, readings = %options.topics.readings, "connected to Kafka");
        Ok(Self {
            producer,
            admin,
            bootstrap,
            options,
        })
    }

    /// The topic names in use.
    pub fn topics(&self) -> &TopicNames {
        &self.options.topics
    }

    /// The admin client this log created its topics with.
    pub fn admin(&self) -> &KafkaAdmin {
        &self.admin
    }
}

async fn delivered(future: DeliveryFuture, topic: &str) -> Result<(), BackendError> {
    match future.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((error, _))) => Err(classify(&error, &format!("appending to {topic}"))),
        Err(_canceled) => Err(BackendError::Closed(BACKEND)),
    }
}

#[async_trait]
impl EventLog for KafkaLog {
    async fn append(&self, topic: Topic, records: Vec<Record>) -> Result<(), BackendError> {
        let name = self.options.topics.name(topic);
        let mut in_flight = std::collections::VecDeque::with_capacity(records.len());
        for record in &records {
            let mut message = FutureRecord::to(name)
                .key(record.key.as_str())
                .payload(record.payload.as_slice());
            if !record.headers.is_empty() {
                let headers = record.headers.iter().fold(
                    OwnedHeaders::new_with_capacity(record.headers.len()),
                    |headers, (key, value)| {
                        headers.insert(Header {
                            key,
                            value: Some(value.as_str()),
                        })
                    },
                );
                message = message.headers(headers);
            }
            loop {
                match self.producer.send_result(message) {
                    Ok(future) => {
                        in_flight.push_back(future);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        message = back;
                        // The local queue is full: wait for room rather than fail. Our
                        // own oldest record frees a slot when acknowledged; with none in
                        // flight, other appends fill the queue and will drain it.
                        match in_flight.pop_front() {
                            Some(oldest) => delivered(oldest, name).await?,
                            None => tokio::time::sleep(Duration::from_millis(10)).await,
                        }
                    }
                    Err((error, _)) => {
                        return Err(classify(&error, &format!("appending to {name}")));
                    }
                }
            }
        }
        for future in in_flight {
            delivered(future, name).await?;
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        topic: Topic,
        group: &str,
    ) -> Result<Box<dyn LogConsumer>, BackendError> {
        let name = self.options.topics.name(topic).to_owned();
        let consumer: StreamConsumer<ConsumerState> = client_config(&self.bootstrap, &self.options)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .create_with_context(ConsumerState::default())
            .map_err(|e| classify(&e, "creating the Kafka consumer"))?;
        consumer
            .subscribe(&[&name])
            .map_err(|e| classify(&e, &format!("subscribing to {name}")))?;
        Ok(Box::new(KafkaConsumer {
            consumer: Arc::new(consumer),
            topic: name,
            timeout: self.options.request_timeout,
            admin: self.admin.clone(),
            grouped: true,
            seen: None,
        }))
    }

    async fn tail(&self, topic: Topic) -> Result<Box<dyn LogConsumer>, BackendError> {
        let name = self.options.topics.name(topic).to_owned();
        let partitions =
            self.admin
                .partitions(&name)
                .await?
                .ok_or_else(|| BackendError::Rejected {
                    backend: BACKEND,
                    detail: format!("topic {name} does not exist; create it (create_topics=true)"),
                })?;
        // librdkafka's `assign` needs a `group.id`, but without `subscribe` the group is
        // never joined, and nothing is committed: the broker keeps no group, and a
        // restart starts again at the end.
        let consumer: StreamConsumer<ConsumerState> = client_config(&self.bootstrap, &self.options)
            .set("group.id", format!("{name}-tail"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create_with_context(ConsumerState::default())
            .map_err(|e| classify(&e, "creating the Kafka consumer"))?;
        let mut list = TopicPartitionList::new();
        for partition in 0..partitions {
            let partition = i32::try_from(partition).unwrap_or(i32::MAX);
            list.add_partition_offset(&name, partition, Offset::End)
                .map_err(|e| classify(&e, &format!("assigning {name}")))?;
        }
        consumer
            .assign(&list)
            .map_err(|e| classify(&e, &format!("assigning {name}")))?;
        Ok(Box::new(KafkaConsumer {
            consumer: Arc::new(consumer),
            topic: name,
            timeout: self.options.request_timeout,
            admin: self.admin.clone(),
            grouped: false,
            seen: None,
        }))
    }

    async fn rewind(
        &self,
        topic: Topic,
        group: &str,
        from_ms: i64,
    ) -> Result<Vec<Rewound>, BackendError> {
        let name = self.options.topics.name(topic);
        super::rewind::rewind(&self.bootstrap, &self.options, name, group, from_ms).await
    }

    fn name(&self) -> &'static str {
        "kafka"
    }
}
