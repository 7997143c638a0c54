// Call recordings in Blob Storage (CALLBOT_RECORDINGS_URL): deployed only when recordings are turned on
// (main.bicep: recordings=true). The app writes one append blob per call with its managed identity; no account key
// is ever used (shared-key access is off), the container is private, and a lifecycle rule deletes recordings after
// `retentionDays` (they hold callers' voices).
param name string
param location string
param tags object

@description('Principal (the app identity) that writes recordings.')
param writerPrincipalId string

@description('Days a recording is kept; the lifecycle rule deletes older ones.')
@minValue(1)
@maxValue(3650)
param retentionDays int

var containerName = 'recordings'
// Storage Blob Data Contributor: read, write and delete blobs; nothing on the account itself.
var blobContributorRoleId = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  //checkov:skip=CKV_AZURE_59: the Container Apps environment has no VNet, so the app reaches the account over its public endpoint; every request needs an Entra token (shared keys off, no anonymous access).
  //checkov:skip=CKV_AZURE_35: network rules allow all networks for the same reason (no VNet to allow instead); every request still needs an Entra token and the role on the container.
  //checkov:skip=CKV_AZURE_206: recordings are operational data with a retention of days; locally redundant storage is the deliberate cost choice (set the SKU to Standard_ZRS/GRS here to replicate).
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource blobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource container 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobs
  name: containerName
  properties: {
    publicAccess: 'None'
  }
}

resource retention 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'delete-old-recordings'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'appendBlob'
                'blockBlob'
              ]
              prefixMatch: [
                '${containerName}/'
              ]
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterCreationGreaterThan: retentionDays
                }
              }
            }
          }
        }
      ]
    }
  }
}

// Scoped to the recordings container, not the account.
resource writer 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(container.id, writerPrincipalId, blobContributorRoleId)
  scope: container
  properties: {
    principalId: writerPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', blobContributorRoleId)
  }
}

output containerUrl string = '${account.properties.primaryEndpoints.blob}${containerName}'
output writerRoleAssignmentId string = writer.id
