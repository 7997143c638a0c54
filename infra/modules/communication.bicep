// Azure Communication Services: phone numbers, Call Automation (answer, media streaming) and the IncomingCall
// events (Event Grid system topic, infra/eventgrid.bicep).
param name string
param tags object

@description('Where ACS stores data at rest, e.g. "United States", "Europe", "UK".')
param dataLocation string

@description('Principal (the app identity) that calls Call Automation with Microsoft Entra tokens.')
param principalId string

// Role on this one ACS resource. ACS authorizes Entra-authenticated Call Automation requests with Azure RBAC on
// the resource, and built-in roles are what it is documented and known to honour (custom roles reportedly are
// not). Microsoft's service-principal quickstart grants "Contributor", which may write every resource type in
// its scope. The narrowest built-in role with the same Microsoft.Communication permissions is "Communication and
// Email Service Owner" (09976791-48a7-449e-bb21-39d1a415f350): its actions are Microsoft.Communication/* plus the
// deployment/alert/support actions common to service-owner roles. If Call Automation answers 403 with it, deploy
// with the Contributor id (b24988ac-6180-42a0-ab88-20f7382dd24c): main.bicep's acsRoleDefinitionId, i.e.
// `azd env set CALLBOT_ACS_ROLE_DEFINITION_ID b24988ac-6180-42a0-ab88-20f7382dd24c`.
@allowed([
  '09976791-48a7-449e-bb21-39d1a415f350'
  'b24988ac-6180-42a0-ab88-20f7382dd24c'
])
param roleDefinitionId string = '09976791-48a7-449e-bb21-39d1a415f350'

resource acs 'Microsoft.Communication/communicationServices@2023-04-01' = {
  name: name
  location: 'global'
  tags: tags
  properties: {
    dataLocation: dataLocation
  }
}

resource callAutomation 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(acs.id, principalId, roleDefinitionId)
  scope: acs
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleDefinitionId)
  }
}

output name string = acs.name
output id string = acs.id
// No trailing slash: the form the service expects for ACS_ENDPOINT.
output endpoint string = 'https://${acs.properties.hostName}'
// The audience of the JWTs ACS signs for callbacks and the media WebSocket (ACS_RESOURCE_ID).
output immutableResourceId string = acs.properties.immutableResourceId
output roleAssignmentId string = callAutomation.id
