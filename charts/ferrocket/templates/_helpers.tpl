{{/* Name of the chart. */}}
{{- define "ferrocket.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Fully qualified name of the operator's objects. */}}
{{- define "ferrocket.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s-operator" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ferrocket.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "ferrocket.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "ferrocket.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ferrocket.name" . }}-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ferrocket.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ferrocket.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "ferrocket.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The rules the operator needs (operator/src/rbac.rs lists them; tests/chart.rs checks this covers them). */}}
{{- define "ferrocket.managedRules" -}}
- apiGroups: ["ferrocket.io"]
  resources: ["nameservers", "brokergroups"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["ferrocket.io"]
  resources: ["nameservers/status", "brokergroups/status"]
  verbs: ["get", "patch", "update"]
# delete: recreated (pods orphaned) when storage.size grows.
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The brokers' PVCs grow with storage.size.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["list", "patch"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch"]
# update: the roles ConfigMap is replaced with a resourceVersion precondition.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "update"]
# Each BrokerGroup's control Secret (<group>-control), applied by name.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "patch"]
# patch: the in-sync label; delete: outdated pods in a rolling update (OnDelete).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# spec.networkPolicy: <group>-ports, applied by name, deleted when the field goes.
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "create", "patch", "delete"]
{{- end -}}

{{/* The Secret holding the operator's control key. */}}
{{- define "ferrocket.controlSecretName" -}}
{{- default (printf "%s-control" (include "ferrocket.fullname" .)) .Values.control.existingSecret -}}
{{- end -}}
