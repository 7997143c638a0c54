// AI Services (AI Foundry) account serving the Voice Live API. Key auth is disabled: the app signs in with its
// managed identity (scope https://ai.azure.com/.default). Voice Live's models are hosted by the service: no model
// deployment is needed in the account.
param name string
param location string
param tags object

@description('Principal (the app identity) that opens Voice Live sessions.')
param principalId string

// Cognitive Services User: data-plane use of the account (Voice Live sessions, agents in its projects); no key
// listing, no management writes.
var cognitiveServicesUserRoleId = 'a97b65f3-24c7-4388-baec-2e87135dc908'

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' = {
  //checkov:skip=CKV_AZURE_238: the account calls no other resource (no customer-managed key, no storage), so an identity of its own would be unused; the app's identity is what signs in to it.
  //checkov:skip=CKV_AZURE_134: the Container Apps environment has no VNet, so the account is reached over its public endpoint; key auth is off (disableLocalAuth), every call needs an Entra token with a role on this account.
  name: name
  location: location
  tags: tags
  kind: 'AIServices'
  sku: {
    name: 'S0'
  }
  properties: {
    // Entra ID authentication requires a custom subdomain.
    customSubDomainName: name
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
    }
  }
}

resource voiceLiveUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, principalId, cognitiveServicesUserRoleId)
  scope: account
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', cognitiveServicesUserRoleId)
  }
}

output name string = account.name
output endpoint string = account.properties.endpoint
output roleAssignmentId string = voiceLiveUser.id
