{{/*
Names, labels and the few decisions several templates share.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "sensorfleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object name: fullnameOverride, else the release name when it already
contains the chart name (`helm install sensorfleet …` gives "sensorfleet", not
"sensorfleet-sensorfleet"), else "<release>-<chart>". 63 characters at most (DNS label).
*/}}
{{- define "sensorfleet.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart-version, as the helm.sh/chart label wants it. */}}
{{- define "sensorfleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object of the chart. */}}
{{- define "sensorfleet.labels" -}}
helm.sh/chart: {{ include "sensorfleet.chart" . }}
{{ include "sensorfleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sensorfleet
{{- end }}

{{/* The labels that select the operator's pods; never change them (selectors are immutable). */}}
{{- define "sensorfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sensorfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "sensorfleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sensorfleet.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag of the SensorFleet image. */}}
{{- define "sensorfleet.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* "true" when the operator watches every namespace (operator.watchNamespace "*"). */}}
{{- define "sensorfleet.watchAll" -}}
{{- if eq (toString .Values.operator.watchNamespace) "*" }}true{{ end }}
{{- end }}

{{/*
The one namespace the operator watches ("" → the release namespace). With "*" this is the
release namespace too: where namespaced things that follow the watch (the example
Pipeline) go.
*/}}
{{- define "sensorfleet.watchNamespace" -}}
{{- $ns := toString .Values.operator.watchNamespace }}
{{- if or (eq $ns "") (eq $ns "*") }}
{{- .Release.Namespace }}
{{- else }}
{{- $ns }}
{{- end }}
{{- end }}

{{/*
What the operator may do in the namespaces it watches: the same rules for a Role (one
namespace) and a ClusterRole (all). Why each verb is here:
- its own resources: read and watch them, patch metadata.finalizers and labels (update is
  there for clients that replace instead of patch), and write their status subresource;
- pipelines/finalizers update: the objects it creates carry an ownerReference with
  blockOwnerDeletion, which the OwnerReferencesPermissionEnforcement admission plugin only
  allows to whoever may update the owner's finalizers;
- ConfigMaps, Deployments, StatefulSets (the bridges: a stable pod name is a stable MQTT
  client id), Services, Ingresses, CronJobs (the hourly rollup), HorizontalPodAutoscalers
  (the API's, when a Pipeline asks): server-side apply is a patch that creates
  the object when it is missing (patch + create), list/watch to notice drift, delete to
  remove what a Pipeline no longer asks for; no update: apply never needs it;
- Secrets: get, by the names Pipelines reference, and create/patch/delete of each
  SensorFleet's `<fleet>-device-credentials` (Pipeline spec.mqtt.deviceAuth); it can
  neither list nor watch them, so it never sees Secrets it was not pointed at;
- Events: create and patch (repeated events are patched), in both APIs clients use.
*/}}
{{- define "sensorfleet.operatorRules" -}}
- apiGroups: [iot.sensorfleet.dev]
  resources: [pipelines, sensorfleets, alertrules]
  verbs: [get, list, watch, patch, update]
- apiGroups: [iot.sensorfleet.dev]
  resources: [pipelines/status, sensorfleets/status, alertrules/status]
  verbs: [get, patch, update]
- apiGroups: [iot.sensorfleet.dev]
  resources: [pipelines/finalizers, sensorfleets/finalizers, alertrules/finalizers]
  verbs: [update]
- apiGroups: [""]
  resources: [configmaps, services]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [apps]
  resources: [deployments, statefulsets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [networking.k8s.io]
  resources: [ingresses]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [batch]
  resources: [cronjobs]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, create, patch, delete]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
{{- end }}
