// The app's user-assigned managed identity. Roles are granted on each target resource in that resource's module
// (least privilege, scoped to the one resource): AI Services, ACS, Container Registry, Key Vault.
param name string
param location string
param tags object

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId
