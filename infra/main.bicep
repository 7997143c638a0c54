// callbot on Azure: everything `azd up` provisions (see "Deploy to Azure" in README.md).
//
// Resource group with: Azure Communication Services, an AI Services (AI Foundry) account for Voice Live with
// key auth disabled, a user-assigned managed identity with least-privilege roles, Key Vault (the two shared
// secrets), Container Registry (remote builds), Log Analytics + Application Insights, and the Container Apps
// environment + app. The Event Grid IncomingCall subscription is deployed after the app is up by
// infra/hooks/postdeploy.sh (infra/eventgrid.bicep): Event Grid validates the webhook when it is created.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; names the resource group and seeds the resource names.')
param environmentName string

@minLength(1)
@description('Primary location for all resources.')
param location string

@description('Location of the AI Services account. Voice Live is offered in a subset of regions (e.g. eastus2, swedencentral, westus2, centralindia, southeastasia): check the Voice Live region list.')
param aiLocation string = location

@description('Where Azure Communication Services stores data at rest.')
param acsDataLocation string = 'United States'

@description('Role given to the app identity on the ACS resource. Default: "Communication and Email Service Owner" (see modules/communication.bicep); "Contributor" (b24988ac-6180-42a0-ab88-20f7382dd24c) is the role Microsoft\'s service-principal quickstart uses.')
@allowed([
  '09976791-48a7-449e-bb21-39d1a415f350'
  'b24988ac-6180-42a0-ab88-20f7382dd24c'
])
param acsRoleDefinitionId string = '09976791-48a7-449e-bb21-39d1a415f350'

@description('True once azd has deployed the app image (azd sets SERVICE_CALLBOT_RESOURCE_EXISTS): re-provisioning then keeps the deployed image instead of the placeholder.')
param callbotExists bool = false

// ---- app settings (every one reaches the container as the environment variable named in brackets) ----------

@description('[AZURE_VOICELIVE_MODEL] Voice Live model.')
param voiceLiveModel string = 'gpt-realtime'

@description('[AZURE_VOICELIVE_AGENT_NAME] Agent mode: the AI Foundry agent (set together with the project name). Empty: model mode.')
param voiceLiveAgentName string = ''

@description('[AZURE_VOICELIVE_PROJECT_NAME] Agent mode: the AI Foundry project. Empty: model mode.')
param voiceLiveProjectName string = ''

@description('[CALLBOT_PUBLIC_URL] Public https base URL ACS calls back on. Empty: https://<app>.<environment default domain>; set it when a custom domain is bound.')
param publicUrl string = ''

@description('[CALLBOT_INSTRUCTIONS] The agent\'s system prompt.')
param instructions string = 'You are a friendly, concise assistant answering a phone call. Speak naturally, keep answers short (one or two sentences), and ask one question at a time. If you cannot help, say so politely.'

@description('[CALLBOT_GREETING] What the bot says when the call connects.')
param greeting string = 'Hello, thanks for calling. How can I help you today?'

@description('True: no greeting, the caller speaks first (CALLBOT_GREETING is set empty). A separate switch because azd passes an empty environment value as "use the default".')
param callerSpeaksFirst bool = false

@description('[CALLBOT_VOICE] Azure voice (en-US-Ava:DragonHDLatestNeural, en-US-AvaNeural, ...) or OpenAI voice (alloy, ...).')
param voice string = 'en-US-Ava:DragonHDLatestNeural'

@description('[CALLBOT_TURN_DETECTION] Turn detection.')
@allowed([
  'azure_semantic_vad'
  'azure_semantic_vad_multilingual'
  'server_vad'
])
param turnDetection string = 'azure_semantic_vad'

@description('[CALLBOT_NOISE_REDUCTION] Noise suppression; "off" disables it.')
param noiseReduction string = 'azure_deep_noise_suppression'

@description('[CALLBOT_ECHO_CANCELLATION] Echo cancellation; "off" disables it.')
param echoCancellation string = 'server_echo_cancellation'

@description('[CALLBOT_MEDIA_FORMAT] ACS media streaming format.')
@allowed([
  'pcm24k'
  'pcm16k'
])
param mediaFormat string = 'pcm24k'

@description('[CALLBOT_MAX_CALL_SECONDS] Longest call before the bot hangs up.')
@minValue(1)
param maxCallSeconds int = 3600

@description('[CALLBOT_MAX_CONCURRENT_CALLS] Calls one replica accepts before it rejects new ones. Keep it above callsPerReplica so scale-out starts before calls are turned away.')
@minValue(1)
param maxConcurrentCalls int = 220

@description('[LOG_LEVEL] Logging level.')
@allowed([
  'DEBUG'
  'INFO'
  'WARNING'
  'ERROR'
  'CRITICAL'
])
param logLevel string = 'INFO'

@description('[CALLBOT_RECORDINGS] Record every call (all its wire messages, callers\' voices included) to a private Blob Storage container. false (the default): no storage account, nothing recorded. true: a storage account with shared keys off, the app identity as Storage Blob Data Contributor on the container, and CALLBOT_RECORDINGS_URL set.')
param recordings bool = false

@description('[CALLBOT_RECORDINGS_RETENTION_DAYS] With recordings: days a recording is kept before the lifecycle rule deletes it.')
@minValue(1)
@maxValue(3650)
param recordingsRetentionDays int = 30

@description('[CALLBOT_DRAIN_SECONDS] How long active calls may go on after SIGTERM (new revision, scale-in). The replica\'s termination grace period is this plus 30 s; Container Apps allows at most 600 s.')
@minValue(0)
@maxValue(570)
param drainSeconds int = 300

@description('[CALLBOT_SIGNING_KEY] Key for the per-call URL tokens, shared by all replicas (generated by infra/hooks/preprovision.sh).')
@secure()
@minLength(32)
param signingKey string

@description('[CALLBOT_WEBHOOK_SECRET] Secret the Event Grid webhook URL carries (generated by infra/hooks/preprovision.sh). URL-safe characters only.')
@secure()
@minLength(32)
param webhookSecret string

@description('[CALLBOT_WEB_PHONE_KEY] Access key of the web phone (/phone). Empty (the default): the web phone is off. Set: it is on, the key is kept in Key Vault, and a person must enter it on the page. At least 12 characters.')
@secure()
param webPhoneKey string = ''

@description('[TWILIO_ACCOUNT_SID] Twilio account SID, for a Twilio number as a second phone line (Twilio Media Streams). Empty (the default): no Twilio. Set with twilioAuthToken: both are kept in Key Vault and the Twilio webhook /api/twilio/voice takes calls.')
@secure()
param twilioAccountSid string = ''

@description('[TWILIO_AUTH_TOKEN] Twilio auth token: checks X-Twilio-Signature and signs Twilio REST calls (hang-up, transfer). Empty (the default): no Twilio.')
@secure()
param twilioAuthToken string = ''

@description('More environment variables for the container, e.g. [{"name": "CALLBOT_VAD_SILENCE_MS", "value": "600"}].')
param extraEnv array = []

// ---- capacity ---------------------------------------------------------------------------------------------

// Sized from `callbot bench` (--sweep): on one core of a 2-vCPU box one process carried 227 concurrent calls on the
// default talk profile and 275 on the heavy one with p99 forwarding under 20 ms and no lost frame (README, Performance,
// issue 18); 170 leaves headroom for noisy neighbours, bursts and heavier talk than the bench's. Each call
// holds one media WebSocket, which the HTTP scaler counts as one concurrent request for the whole call, so this is
// the per-replica call target of the scale rule. Re-run the sweep on your replica size (CALLBOT_CPU) and adjust.
@description('Concurrent calls per replica before Container Apps adds a replica (from `callbot bench`).')
@minValue(1)
param callsPerReplica int = 170

@description('Replicas kept running: at least 1, so an incoming call never waits for a cold start.')
@minValue(1)
param minReplicas int = 1

// The ingress spreads connections over all ready replicas (an ACS media server honours no affinity), so a call's
// media WebSocket may reach a replica that did not answer it: that replica takes the call over from the signed
// per-call token (all replicas share CALLBOT_SIGNING_KEY), and the answering replica releases its pre-opened
// session once ACS reports the media streaming elsewhere. The scale rule adds one replica per callsPerReplica calls.
@description('Upper bound of the scale-out.')
@minValue(1)
param maxReplicas int = 5

@description('vCPU per replica (Consumption: 0.25 steps up to 4; memory must be 2 GiB per vCPU).')
param cpu string = '1.0'

@description('Memory per replica.')
param memory string = '2Gi'

var tags = {
  'azd-env-name': environmentName
  app: 'callbot'
}
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))

resource rg 'Microsoft.Resources/resourceGroups@2021-04-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-callbot-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    applicationInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
  }
}

module registry 'modules/registry.bicep' = {
  name: 'registry'
  scope: rg
  params: {
    name: 'cr${resourceToken}'
    location: location
    tags: tags
    pullPrincipalId: identity.outputs.principalId
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: 'kv-${resourceToken}'
    location: location
    tags: tags
    readerPrincipalId: identity.outputs.principalId
    signingKey: signingKey
    webhookSecret: webhookSecret
    webPhoneKey: webPhoneKey
    twilioAccountSid: twilioAccountSid
    twilioAuthToken: twilioAuthToken
  }
}

module communication 'modules/communication.bicep' = {
  name: 'communication'
  scope: rg
  params: {
    name: 'acs-${resourceToken}'
    dataLocation: acsDataLocation
    tags: tags
    principalId: identity.outputs.principalId
    roleDefinitionId: acsRoleDefinitionId
  }
}

module ai 'modules/ai.bicep' = {
  name: 'ai'
  scope: rg
  params: {
    name: 'ai-${resourceToken}'
    location: aiLocation
    tags: tags
    principalId: identity.outputs.principalId
  }
}

module storage 'modules/storage.bicep' = if (recordings) {
  name: 'storage'
  scope: rg
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    writerPrincipalId: identity.outputs.principalId
    retentionDays: recordingsRetentionDays
  }
}

// The app module reads outputs of the registry, Key Vault, ACS and AI modules, so it starts only after their role
// assignments exist: the first revision pulls from the registry and resolves the Key Vault references with the
// identity.
module app 'modules/containerapp.bicep' = {
  name: 'containerapp'
  scope: rg
  params: {
    environmentName: 'cae-${resourceToken}'
    appName: 'ca-callbot-${resourceToken}'
    location: location
    tags: tags
    appExists: callbotExists
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    logAnalyticsName: monitoring.outputs.logAnalyticsName
    applicationInsightsConnectionString: monitoring.outputs.applicationInsightsConnectionString
    registryLoginServer: registry.outputs.loginServer
    signingKeySecretUri: keyVault.outputs.signingKeySecretUri
    webhookSecretSecretUri: keyVault.outputs.webhookSecretSecretUri
    webPhoneKeySecretUri: keyVault.outputs.webPhoneKeySecretUri
    twilioAccountSidSecretUri: keyVault.outputs.twilioAccountSidSecretUri
    twilioAuthTokenSecretUri: keyVault.outputs.twilioAuthTokenSecretUri
    recordingsUrl: recordings ? storage.outputs.containerUrl : ''
    voiceLiveEndpoint: ai.outputs.endpoint
    voiceLiveModel: voiceLiveModel
    voiceLiveAgentName: voiceLiveAgentName
    voiceLiveProjectName: voiceLiveProjectName
    acsEndpoint: communication.outputs.endpoint
    acsImmutableResourceId: communication.outputs.immutableResourceId
    publicUrl: publicUrl
    instructions: instructions
    greeting: callerSpeaksFirst ? '' : greeting
    voice: voice
    turnDetection: turnDetection
    noiseReduction: noiseReduction
    echoCancellation: echoCancellation
    mediaFormat: mediaFormat
    maxCallSeconds: maxCallSeconds
    maxConcurrentCalls: maxConcurrentCalls
    logLevel: logLevel
    drainSeconds: drainSeconds
    extraEnv: extraEnv
    callsPerReplica: callsPerReplica
    minReplicas: minReplicas
    maxReplicas: maxReplicas
    cpu: cpu
    memory: memory
  }
}

// azd reads these into the environment (.azure/<env>/.env); the hooks use them.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_CONTAINER_REGISTRY_ENDPOINT string = registry.outputs.loginServer
output AZURE_CONTAINER_REGISTRY_NAME string = registry.outputs.name
output AZURE_CONTAINER_ENVIRONMENT_NAME string = app.outputs.environmentName
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
// Named apart from the app's own settings (ACS_ENDPOINT, CALLBOT_PUBLIC_URL, AZURE_CLIENT_ID, ...) so that a local
// `.env` made from `azd env get-values` does not silently point a local run at the cloud resources.
output CALLBOT_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output AZURE_COMMUNICATION_NAME string = communication.outputs.name
output AZURE_COMMUNICATION_ENDPOINT string = communication.outputs.endpoint
output AZURE_AI_SERVICES_NAME string = ai.outputs.name
output AZURE_AI_SERVICES_ENDPOINT string = ai.outputs.endpoint
output SERVICE_CALLBOT_NAME string = app.outputs.appName
output SERVICE_CALLBOT_FQDN string = app.outputs.fqdn
output SERVICE_CALLBOT_PUBLIC_URL string = app.outputs.publicUrl
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
