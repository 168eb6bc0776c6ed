/** The browser family a tab's worker name carries (browser:Chrome, browser:Firefox...), from navigator.userAgent. */
export function uaFamily(ua: string): string {
  if (/\bEdg(e|A|iOS)?\//.test(ua)) return 'Edge';
  if (/\bOPR\//.test(ua)) return 'Opera';
  if (/\bFirefox\//.test(ua)) return 'Firefox';
  if (/\b(Headless)?Chrom(e|ium)\//.test(ua)) return 'Chrome';
  if (/\bSafari\//.test(ua)) return 'Safari';
  return 'other';
}
