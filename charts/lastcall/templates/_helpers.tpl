{{- define "lastcall.name" -}}lastcall-controller{{- end }}

{{- define "lastcall.labels" -}}
app.kubernetes.io/name: lastcall-controller
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "lastcall.selector" -}}
app.kubernetes.io/name: lastcall-controller
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- /* Names of namespaced objects of the controller, and of its cluster-scoped RBAC: they carry
the release name, so two releases never claim the same object. */ -}}
{{- define "lastcall.fullname" -}}
{{- printf "%s-controller" .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- /* The preStop helper's ClusterRole, for the RoleBindings in workload namespaces. */ -}}
{{- define "lastcall.prestopRole" -}}
{{- printf "%s-prestop" .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- /* The injection webhook's Service and MutatingWebhookConfiguration, and its certificate Secret. */ -}}
{{- define "lastcall.webhookName" -}}
{{- printf "%s-webhook" .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "lastcall.webhookSecret" -}}
{{- printf "%s-webhook-cert" .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- /* The install check's Job, ServiceAccount and Role (webhook-check.yaml). */ -}}
{{- define "lastcall.checkName" -}}
{{- printf "%s-webhook-check" .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
