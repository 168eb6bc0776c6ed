/**
 * The browser join link printed at start: http://HOST:PORT/worker#token=...
 * The token rides in the fragment, which a browser never sends to a server.
 * It is printed only to a terminal: a coordinator whose output goes to a file
 * or a log collector prints the link without it (the page then asks for the
 * token), so the token does not end up in logs.
 */
export function joinLinkLines(pageBase: string, token: string, toTerminal: boolean): string[] {
  const link = `${pageBase}/worker`;
  if (toTerminal) return [`join from a browser: ${link}#token=${encodeURIComponent(token)}`];
  return [`join from a browser: ${link} (it asks for the token; the link with the token is printed only on a terminal)`];
}
