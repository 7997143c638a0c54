// Event Grid: the system topic on the ACS resource and the subscription that posts IncomingCall events to the
// app. Deployed by infra/hooks/postdeploy.sh after `azd deploy`, not by main.bicep: when the subscription is
// created, Event Grid sends a SubscriptionValidationEvent to the webhook and the deployment fails unless the app
// is up to answer it.
//
//   az deployment group create -g <rg> -f infra/eventgrid.bicep -p acsName=<acs> appFqdn=<fqdn> webhookSecret=<s>
targetScope = 'resourceGroup'

@description('Name of the Azure Communication Services resource (same resource group).')
param acsName string

@description('Host name of the app, e.g. ca-callbot-xyz.<region>.azurecontainerapps.io (no scheme, no path).')
param appFqdn string

@description('CALLBOT_WEBHOOK_SECRET: carried as the `secret` query parameter. Event Grid never returns the query string of an endpoint URL once stored.')
@secure()
@minLength(32)
param webhookSecret string

@description('System topic name. An ACS resource can have one system topic: pass the existing one\'s name if there is one.')
param systemTopicName string = 'evgt-${acsName}'

@description('Minutes Event Grid keeps retrying a delivery. An unanswered call rings for about 30 s, so a retry after that is useless: keep the minimum.')
@minValue(1)
param eventTimeToLiveInMinutes int = 1

resource acs 'Microsoft.Communication/communicationServices@2023-04-01' existing = {
  name: acsName
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: systemTopicName
  location: 'global'
  properties: {
    source: acs.id
    topicType: 'Microsoft.Communication.CommunicationServices'
  }
}

resource incomingCall 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: systemTopic
  name: 'callbot-incoming-call'
  properties: {
    eventDeliverySchema: 'EventGridSchema'
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: 'https://${appFqdn}/api/incoming-call?secret=${webhookSecret}'
        // One event per POST: a call is answered as soon as its event arrives, never behind another.
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    filter: {
      includedEventTypes: [
        'Microsoft.Communication.IncomingCall'
      ]
    }
    retryPolicy: {
      maxDeliveryAttempts: 3
      eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
    }
  }
}

output systemTopicName string = systemTopic.name
output subscriptionName string = incomingCall.name
