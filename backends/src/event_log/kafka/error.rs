//! librdkafka errors sorted into what the workers act on: transient (`Unavailable`,
//! retried) or permanent (`Rejected`).

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use super::BACKEND;
use crate::BackendError;

pub(super) fn rejected(detail: impl Into<String>) -> BackendError {
    BackendError::Rejected {
        backend: BACKEND,
        detail: detail.into(),
    }
}

pub(super) fn unavailable(detail: impl Into<String>) -> BackendError {
    BackendError::Unavailable {
        backend: BACKEND,
        detail: detail.into(),
    }
}

/// Errors Kafka will not fix by retrying the same request; everything else (brokers
/// down, timeouts, leader elections, coordinator moves, rebalances) is transient.
fn is_permanent(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::BadMessage
            | C::InvalidArgument
            | C::UnknownTopic
            | C::InvalidMessage
            | C::InvalidMessageSize
            | C::MessageSizeTooLarge
            | C::MessageBatchTooLarge
            | C::OffsetMetadataTooLarge
            | C::InvalidTopic
            | C::InvalidRequiredAcks
            | C::InvalidGroupId
            | C::TopicAuthorizationFailed
            | C::GroupAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::InvalidTimestamp
            | C::UnsupportedVersion
            | C::InvalidPartitions
            | C::InvalidReplicationFactor
            | C::InvalidReplicaAssignment
            | C::InvalidConfig
            | C::InvalidRequest
            | C::UnsupportedForMessageFormat
            | C::PolicyViolation
            | C::InvalidRecord
            | C::TopicDeletionDisabled
            | C::UnsupportedCompressionType
            | C::Authentication
            | C::SaslAuthenticationFailed
            | C::UnsupportedSASLMechanism
            | C::NotImplemented
            | C::UnsupportedFeature
            | C::Fatal
    )
}

/// Errors about one record's content (too large, a timestamp or record the broker
/// refuses): that record will never be appended, the others will.
fn is_content(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(
        code,
        C::MessageSizeTooLarge
            | C::InvalidMessageSize
            | C::InvalidMessage
            | C::InvalidRecord
            | C::InvalidTimestamp
            | C::BadMessage
    )
}

/// Maps a librdkafka error to the backend error the workers act on.
pub(super) fn classify(error: &KafkaError, what: &str) -> BackendError {
    let detail = format!("{what}: {error}");
    match error {
        KafkaError::Canceled => BackendError::Closed(BACKEND),
        KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_) => rejected(detail),
        _ => match error.rdkafka_error_code() {
            Some(code) if is_content(code) => BackendError::Content {
                backend: BACKEND,
                detail,
            },
            Some(code) if is_permanent(code) => rejected(detail),
            _ => unavailable(detail),
        },
    }
}

pub(super) fn admin_code_error(topic: &str, code: RDKafkaErrorCode, what: &str) -> BackendError {
    let detail = format!("{what} {topic}: {code}");
    if is_permanent(code) {
        rejected(detail)
    } else {
        unavailable(detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_split_into_transient_and_permanent() {
        let produce = |code| classify(&KafkaError::MessageProduction(code), "append");
        assert!(produce(RDKafkaErrorCode::MessageTimedOut).is_transient());
        assert!(produce(RDKafkaErrorCode::AllBrokersDown).is_transient());
        assert!(produce(RDKafkaErrorCode::NotEnoughReplicas).is_transient());
        assert!(!produce(RDKafkaErrorCode::MessageSizeTooLarge).is_transient());
        assert!(produce(RDKafkaErrorCode::MessageSizeTooLarge).is_content());
        assert!(!produce(RDKafkaErrorCode::TopicAuthorizationFailed).is_content());
        assert!(!produce(RDKafkaErrorCode::TopicAuthorizationFailed).is_transient());
        assert!(
            classify(
                &KafkaError::ConsumerCommit(RDKafkaErrorCode::RebalanceInProgress),
                "c"
            )
            .is_transient()
        );
    }
}
