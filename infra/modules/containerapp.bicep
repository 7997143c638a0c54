// Container Apps environment + the callbot app: public HTTPS ingress (WebSockets included) on port 8000, the
// app identity for registry pulls, Key Vault references and Entra sign-in to Voice Live and ACS, probes on
// /healthz and /readyz, and an HTTP scale rule counting concurrent calls.
param environmentName string
param appName string
param location string
param tags object

@description('True once azd has deployed an image: keep it instead of the placeholder.')
param appExists bool

param identityId string
param identityClientId string
param logAnalyticsName string

@secure()
param applicationInsightsConnectionString string

param registryLoginServer string
param signingKeySecretUri string
param webhookSecretSecretUri string
@description('Key Vault URI of the web phone\'s access key; empty: the web phone is off.')
param webPhoneKeySecretUri string = ''
@description('Key Vault URIs of the Twilio account SID and auth token; empty: no Twilio (its routes refuse everything).')
param twilioAccountSidSecretUri string = ''
param twilioAuthTokenSecretUri string = ''
@description('The recordings container (CALLBOT_RECORDINGS_URL); empty: calls are not recorded.')
param recordingsUrl string = ''

// App settings (see main.bicep for what each one means).
param voiceLiveEndpoint string
param voiceLiveModel string
param voiceLiveAgentName string
param voiceLiveProjectName string
param acsEndpoint string
param acsImmutableResourceId string
param publicUrl string
param instructions string
param greeting string
param voice string
param turnDetection string
param noiseReduction string
param echoCancellation string
param mediaFormat string
param maxCallSeconds int
param maxConcurrentCalls int
param logLevel string
param drainSeconds int
param extraEnv array

// Capacity.
param callsPerReplica int
param minReplicas int
param maxReplicas int
param cpu string
param memory string

// Shown until the first `azd deploy` pushes the real image. It listens on port 80, so the first revision fails
// its probes on 8000 until then; `azd up` replaces it straight away.
var placeholderImage = 'mcr.microsoft.com/azuredocs/containerapps-helloworld:latest'
var port = 8000

// Names of the container app's secrets (values come from Key Vault, or the App Insights connection string).
var signingKeyRef = 'callbot-signing-key'
var webhookRef = 'callbot-webhook-secret'
var webPhoneKeyRef = 'callbot-web-phone-key'
var webPhoneOn = !empty(webPhoneKeySecretUri)
var appInsightsRef = 'appinsights-connection-string'
var twilioSidRef = 'twilio-account-sid'
var twilioAuthRef = 'twilio-auth-token'
var twilioOn = !empty(twilioAccountSidSecretUri) && !empty(twilioAuthTokenSecretUri)

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2022-10-01' existing = {
  name: logAnalyticsName
}

resource environment 'Microsoft.App/managedEnvironments@2024-03-01' = {
  name: environmentName
  location: location
  tags: tags
  properties: {
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: logAnalytics.properties.customerId
        sharedKey: logAnalytics.listKeys().primarySharedKey
      }
    }
  }
}

module fetchImage 'fetch-container-image.bicep' = {
  name: '${appName}-image'
  params: {
    exists: appExists
    name: appName
  }
}

// The app's own URL: Container Apps names an external app <app name>.<environment default domain>.
var fqdn = '${appName}.${environment.properties.defaultDomain}'
var effectivePublicUrl = empty(publicUrl) ? 'https://${fqdn}' : publicUrl

// Every setting of the interface's Environment table that applies in Azure. Deliberately not set here:
// AZURE_VOICELIVE_API_KEY and ACS_CONNECTION_STRING (keys: this deployment signs in with the managed identity,
// and the AI account has key auth disabled); CALLBOT_INSTRUCTIONS_FILE (CALLBOT_INSTRUCTIONS carries the prompt;
// no file is mounted); CALLBOT_RECORDINGS_DIR (container storage is ephemeral: recordings go to Blob Storage,
// CALLBOT_RECORDINGS_URL, when main.bicep's `recordings` is on; they hold callers' voices, so off by default); CALLBOT_ACS_JWKS_URL and CALLBOT_ACS_ISSUER (the service's defaults are Microsoft's real ones).
// Any of them can still be passed through extraEnv.
var appEnv = [
  { name: 'AZURE_VOICELIVE_ENDPOINT', value: voiceLiveEndpoint }
  { name: 'AZURE_VOICELIVE_MODEL', value: voiceLiveModel }
  { name: 'AZURE_VOICELIVE_AGENT_NAME', value: voiceLiveAgentName }
  { name: 'AZURE_VOICELIVE_PROJECT_NAME', value: voiceLiveProjectName }
  { name: 'ACS_ENDPOINT', value: acsEndpoint }
  { name: 'ACS_RESOURCE_ID', value: acsImmutableResourceId }
  { name: 'CALLBOT_PUBLIC_URL', value: effectivePublicUrl }
  { name: 'CALLBOT_INSTRUCTIONS', value: instructions }
  { name: 'CALLBOT_GREETING', value: greeting }
  { name: 'CALLBOT_VOICE', value: voice }
  { name: 'CALLBOT_TURN_DETECTION', value: turnDetection }
  { name: 'CALLBOT_NOISE_REDUCTION', value: noiseReduction }
  { name: 'CALLBOT_ECHO_CANCELLATION', value: echoCancellation }
  { name: 'CALLBOT_MEDIA_FORMAT', value: mediaFormat }
  { name: 'CALLBOT_MAX_CALL_SECONDS', value: string(maxCallSeconds) }
  { name: 'CALLBOT_MAX_CONCURRENT_CALLS', value: string(maxConcurrentCalls) }
  { name: 'CALLBOT_DRAIN_SECONDS', value: string(drainSeconds) }
  { name: 'LOG_LEVEL', value: logLevel }
  { name: 'CALLBOT_SIGNING_KEY', secretRef: signingKeyRef }
  { name: 'CALLBOT_WEBHOOK_SECRET', secretRef: webhookRef }
  // DefaultAzureCredential picks the user-assigned identity by this client id.
  { name: 'AZURE_CLIENT_ID', value: identityClientId }
  { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', secretRef: appInsightsRef }
  { name: 'CALLBOT_WEB_PHONE', value: webPhoneOn ? 'on' : 'off' }
]
var webPhoneEnv = webPhoneOn ? [{ name: 'CALLBOT_WEB_PHONE_KEY', secretRef: webPhoneKeyRef }] : []
var webPhoneSecrets = webPhoneOn ? [{ name: webPhoneKeyRef, keyVaultUrl: webPhoneKeySecretUri, identity: identityId }] : []
var twilioEnv = twilioOn ? [
  { name: 'TWILIO_ACCOUNT_SID', secretRef: twilioSidRef }
  { name: 'TWILIO_AUTH_TOKEN', secretRef: twilioAuthRef }
] : []
var recordingsEnv = empty(recordingsUrl) ? [] : [{ name: 'CALLBOT_RECORDINGS_URL', value: recordingsUrl }]
var twilioSecrets = twilioOn ? [
  { name: twilioSidRef, keyVaultUrl: twilioAccountSidSecretUri, identity: identityId }
  { name: twilioAuthRef, keyVaultUrl: twilioAuthTokenSecretUri, identity: identityId }
] : []

resource app 'Microsoft.App/containerApps@2024-03-01' = {
  name: appName
  location: location
  tags: union(tags, { 'azd-service-name': 'callbot' })
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    managedEnvironmentId: environment.id
    configuration: {
      activeRevisionsMode: 'Single'
      ingress: {
        external: true
        targetPort: port
        // WebSockets work on the http (HTTP/1.1) transport: ACS opens the media stream as an HTTP/1.1 Upgrade
        // on wss://<fqdn>/ws/media/{call_id}. Ingress terminates TLS; its 4-minute idle timeout never hits a
        // live call, whose media socket carries a frame every 20 ms.
        transport: 'http'
        allowInsecure: false
        traffic: [
          {
            latestRevision: true
            weight: 100
          }
        ]
      }
      registries: [
        {
          server: registryLoginServer
          identity: identityId
        }
      ]
      secrets: concat([
        {
          name: signingKeyRef
          keyVaultUrl: signingKeySecretUri
          identity: identityId
        }
        {
          name: webhookRef
          keyVaultUrl: webhookSecretSecretUri
          identity: identityId
        }
        {
          name: appInsightsRef
          value: applicationInsightsConnectionString
        }
      ], webPhoneSecrets, twilioSecrets)
    }
    template: {
      // SIGTERM (new revision, scale-in) starts the drain: /readyz turns 503 so no new call lands here, active
      // calls go on for CALLBOT_DRAIN_SECONDS; the platform kills the replica only after this grace period.
      terminationGracePeriodSeconds: drainSeconds + 30
      containers: [
        {
          name: 'callbot'
          image: empty(fetchImage.outputs.image) ? placeholderImage : fetchImage.outputs.image
          env: concat(appEnv, webPhoneEnv, twilioEnv, recordingsEnv, extraEnv)
          resources: {
            cpu: json(cpu)
            memory: memory
          }
          probes: [
            {
              type: 'Startup'
              httpGet: {
                path: '/healthz'
                port: port
              }
              periodSeconds: 2
              failureThreshold: 30
              timeoutSeconds: 3
            }
            {
              type: 'Liveness'
              httpGet: {
                path: '/healthz'
                port: port
              }
              periodSeconds: 10
              failureThreshold: 3
              timeoutSeconds: 5
            }
            {
              type: 'Readiness'
              httpGet: {
                path: '/readyz'
                port: port
              }
              periodSeconds: 5
              failureThreshold: 2
              timeoutSeconds: 3
            }
          ]
        }
      ]
      scale: {
        minReplicas: minReplicas
        maxReplicas: maxReplicas
        rules: [
          {
            // callsPerReplica comes from `callbot bench` (see main.bicep): one call = one long-lived media
            // WebSocket = one concurrent request for the HTTP scaler.
            name: 'concurrent-calls'
            http: {
              metadata: {
                concurrentRequests: string(callsPerReplica)
              }
            }
          }
        ]
      }
    }
  }
}

output environmentName string = environment.name
output appName string = app.name
output fqdn string = app.properties.configuration.ingress.fqdn
output publicUrl string = effectivePublicUrl
