// Azure Container Registry for the app image. `azd deploy` builds the image in the registry itself
// (azure.yaml: docker.remoteBuild), so no local Docker engine is needed.
param name string
param location string
param tags object

@description('Principal (the app identity) that pulls the image.')
param pullPrincipalId string

// AcrPull: read images, nothing else.
var acrPullRoleId = '7f951dda-4ed3-4680-a7ca-43fe172d538d'

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' = {
  //checkov:skip=CKV_AZURE_139: remote builds (ACR Tasks agents) and the Container Apps environment (no VNet) reach the registry over its public endpoint; access needs Entra auth (admin user disabled, anonymous pull off).
  //checkov:skip=CKV_AZURE_166: image quarantine needs an external scanner that releases images; none is part of this deployment.
  //checkov:skip=CKV_AZURE_163: image vulnerability scanning is Microsoft Defender for Containers, a subscription-wide plan (with its own cost) switched on outside this template.
  //checkov:skip=CKV_AZURE_233: zone redundancy needs the Premium SKU.
  name: name
  location: location
  tags: tags
  sku: {
    name: 'Basic'
  }
  properties: {
    adminUserEnabled: false
    anonymousPullEnabled: false
    publicNetworkAccess: 'Enabled'
  }
}

resource pull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, pullPrincipalId, acrPullRoleId)
  scope: registry
  properties: {
    principalId: pullPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', acrPullRoleId)
  }
}

output name string = registry.name
output loginServer string = registry.properties.loginServer
output pullRoleAssignmentId string = pull.id
