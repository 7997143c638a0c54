// Log Analytics (Container Apps console and system logs) and workspace-based Application Insights.
param logAnalyticsName string
param applicationInsightsName string
param location string
param tags object

@description('Days logs are kept. Call logs may hold what callers said (transcripts at DEBUG): keep this short.')
@minValue(30)
@maxValue(730)
param retentionInDays int = 30

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2022-10-01' = {
  name: logAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
  }
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: applicationInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalytics.id
    RetentionInDays: retentionInDays
  }
}

output logAnalyticsName string = logAnalytics.name
output logAnalyticsId string = logAnalytics.id
output applicationInsightsName string = applicationInsights.name
// A connection string is an ingestion endpoint plus the instrumentation key, which only allows sending telemetry.
output applicationInsightsConnectionString string = applicationInsights.properties.ConnectionString
