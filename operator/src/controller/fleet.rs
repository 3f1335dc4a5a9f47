//! SensorFleet → its devices in the pipeline's registry (`devices`) and, with device
//! auth, their identities at the broker ([`identity`]); both removed on delete.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use sensorfleet_backends::DeviceRecord;
use sensorfleet_model::crd::status::SensorFleetStatus;
use sensorfleet_model::credentials::{new_secret, secret_from_hex, secret_to_hex};
use sensorfleet_model::manifest::declared_count;
use sensorfleet_model::{Problem, SensorFleet};

use super::mirrored::Mirrored;
use super::{Context, PipelineRegistry};
use crate::identity::plan::Declared;
use crate::identity::{self, BrokerIdentity};
use crate::mirror::device_records;
use crate::{Error, FIELD_MANAGER, validate};

impl Mirrored for SensorFleet {
    const ROWS: &'static str = "devices";
    const REMOVE: &'static str = "RemoveDevices";
    type Desired = Vec<DeviceRecord>;

    fn paused(&self) -> bool {
        self.spec.paused
    }

    fn desired(&self) -> Result<Self::Desired, Vec<Problem>> {
        let problems = validate::fleet(&self.spec);
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(device_records(&self.name_any(), &self.spec))
    }

    fn declare(&self, status: &mut SensorFleetStatus) {
        status.device_count = declared_count(&self.spec);
    }

    async fn pipeline(&self, _ctx: &Context, _namespace: &str) -> Result<Option<String>, Error> {
        Ok(self.spec.pipeline.clone())
    }

    async fn mirror(
        &self,
        ctx: &Context,
        registry: &PipelineRegistry,
        records: Vec<DeviceRecord>,
        status: &mut SensorFleetStatus,
        unchanged: bool,
    ) -> Result<String, Error> {
        let (pipeline, target) = (&registry.name, &registry.target);
        // An unchanged, mirrored fleet writes nothing: checking its first and last device
        // is two indexed reads, and catches a registry that was wiped or restored.
        let intact = match (records.first(), records.last()) {
            (Some(first), Some(last)) => {
                target.registry.device(&first.device_id).await?.is_some()
                    && target.registry.device(&last.device_id).await?.is_some()
            }
            _ => true,
        };
        if !(unchanged && intact) {
            target.registry.upsert_devices(&records).await?;
            let keep: Vec<String> = records.iter().map(|r| r.device_id.clone()).collect();
            let pruned = target.registry.prune_fleet(&self.name_any(), &keep).await?;
            ctx.event(
                self,
                EventType::Normal,
                "Mirrored",
                "MirrorDevices",
                format!(
                    "{} devices in the registry of Pipeline {pipeline}; {pruned} no longer declared removed",
                    records.len()
                ),
            )
            .await;
        }
        // Live: the processors record presence changes; one aggregate query per fleet.
        status.online_count = target.registry.online_count(&self.name_any()).await?;
        let mut message = format!(
            "{} devices mirrored to the registry of Pipeline {pipeline}",
            records.len()
        );
        if let Some(identity) = &registry.identity {
            let not_provisioned = provision(self, ctx, identity, &records).await?;
            message.push_str(&format!(
                "; {} device identities at the MQTT broker",
                records.len() - not_provisioned
            ));
        }
        Ok(message)
    }

    async fn unmirror(&self, ctx: &Context, registry: &PipelineRegistry) -> Result<String, Error> {
        let removed = registry
            .target
            .registry
            .prune_fleet(&self.name_any(), &[])
            .await?;
        let mut note = format!(
            "{removed} devices removed from the registry of Pipeline {}",
            registry.name
        );
        if let Some(identity) = &registry.identity {
            let revoked = identity::revoke(identity, &owner(self)).await?;
            let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace(self));
            match secrets
                .delete(
                    &identity::secret_name(&self.name_any()),
                    &DeleteParams::default(),
                )
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            note.push_str(&format!(
                "; {revoked} device identities revoked at the MQTT broker"
            ));
        }
        Ok(note)
    }
}

/// `<namespace>/<name>`: the owner the broker's clients are tagged with.
fn owner(fleet: &SensorFleet) -> String {
    format!("{}/{}", namespace(fleet), fleet.name_any())
}

fn namespace(fleet: &SensorFleet) -> String {
    fleet.namespace().unwrap_or_default()
}

/// The fleet's Secret and its devices' clients at the broker, with Events for what
/// changed and what is wrong; how many declared devices are not provisioned.
async fn provision(
    fleet: &SensorFleet,
    ctx: &Context,
    identity: &BrokerIdentity,
    records: &[DeviceRecord],
) -> Result<usize, Error> {
    let declared: Vec<Declared> = records
        .iter()
        .map(|r| Declared {
            id: r.device_id.clone(),
            device_type: r.device_type.clone(),
        })
        .collect();
    let secret = credentials_secret(fleet, ctx, &declared).await?;
    let done = identity::provision(identity, &owner(fleet), &secret, &declared).await?;
    if done.created + done.replaced + done.removed > 0 {
        let note = format!(
            "{} device identities made, {} made again, {} revoked at the MQTT broker; passwords in Secret {}",
            done.created,
            done.replaced,
            done.removed,
            identity::secret_name(&fleet.name_any())
        );
        ctx.event(
            fleet,
            EventType::Normal,
            "Provisioned",
            "ProvisionDevices",
            note,
        )
        .await;
    }
    if !done.taken.is_empty() {
        let note = format!(
            "{} declared devices are not provisioned: the broker has users of that name that this fleet does not own, e.g. {:?}",
            done.taken.len(),
            done.taken[0]
        );
        ctx.event(
            fleet,
            EventType::Warning,
            "IdentityTaken",
            "ProvisionDevices",
            note,
        )
        .await;
    }
    if done.anonymous_admitted {
        let note = format!(
            "the MQTT broker {:?} lets anonymous clients connect: set allow_anonymous false in its configuration",
            identity.broker
        );
        ctx.event(
            fleet,
            EventType::Warning,
            "AnonymousAdmitted",
            "ProvisionDevices",
            note,
        )
        .await;
    }
    Ok(done.taken.len())
}

/// The fleet secret from the Secret `<fleet>-device-credentials`, made (owned by the
/// fleet, so it goes with it) when missing or unreadable; the password list kept in
/// step with the declared devices.
async fn credentials_secret(
    fleet: &SensorFleet,
    ctx: &Context,
    declared: &[Declared],
) -> Result<Vec<u8>, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace(fleet));
    let name = identity::secret_name(&fleet.name_any());
    let existing = api.get_opt(&name).await?.and_then(|s| s.data);
    let kept = existing
        .as_ref()
        .and_then(|data| data.get(identity::SECRET_KEY))
        .and_then(|b| secret_from_hex(std::str::from_utf8(&b.0).ok()?));
    let secret = match kept {
        Some(secret) => secret,
        None => new_secret().map_err(|e| Error::Dependency {
            what: "/dev/urandom".into(),
            problem: format!("cannot make a fleet secret: {e}"),
        })?,
    };
    let mut data = BTreeMap::new();
    data.insert(
        identity::SECRET_KEY.to_owned(),
        ByteString(secret_to_hex(&secret).into_bytes()),
    );
    if let Some(list) = identity::password_list(&secret, declared) {
        data.insert(
            identity::PASSWORDS_KEY.to_owned(),
            ByteString(list.into_bytes()),
        );
    }
    if existing.as_ref() != Some(&data) {
        let object = Secret {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                owner_references: fleet.controller_owner_ref(&()).map(|r| vec![r]),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_owned(),
                    FIELD_MANAGER.to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".into()),
            data: Some(data),
            ..Secret::default()
        };
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(object),
        )
        .await?;
    }
    Ok(secret)
}
