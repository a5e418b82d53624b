"""Analytics (issue 17): dashboards for a course's staff, platform admins and community admins.

``schemas`` (queries and answers), ``core`` (pure: filling day series, retention and drop-off, score
histograms), ``store`` (the SQL, which reads only the rollup tables of migration 0034), ``service`` (who may see
what, limits) and ``handlers`` (REST). The rollups are kept current by triggers in the same transaction as the
write they count (migration 0034); see docs/analytics.md."""
