/**
 * Process lifecycle. Under the local stack each function and service is a child
 * of the supervisor with an IPC channel; if the supervisor dies without stopping
 * them (SIGKILL, a crash), the channel closes and the child stops itself instead
 * of living on as an orphan holding ports and files. In a container there is no
 * channel and this does nothing.
 */
export function stopWithParent(stop: (reason: string) => void): void {
  if (!process.send) return;
  // Gone already (killed while this process was still loading): the 'disconnect' event has passed.
  if (!process.connected) return stop('supervisor gone');
  process.once('disconnect', () => stop('supervisor gone'));
}
