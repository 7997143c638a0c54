// The image the app runs now, so that re-provisioning keeps what `azd deploy` put there (azd sets
// SERVICE_CALLBOT_RESOURCE_EXISTS once the app exists). A separate module because a template cannot read the
// resource it is deploying.
param exists bool
param name string

resource existingApp 'Microsoft.App/containerApps@2024-03-01' existing = if (exists) {
  name: name
}

output image string = exists ? existingApp.properties.template.containers[0].image : ''
