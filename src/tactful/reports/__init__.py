"""Reports: read-only figures computed from the warehouse and the database (dashboards;
funnels, attribution, uplift and ROI of campaigns and journeys)."""
