// The website's tag: Segment's analytics.js from npm, exposed to the page as a global.
import { AnalyticsBrowser } from '@segment/analytics-next'

window.AnalyticsBrowser = AnalyticsBrowser
