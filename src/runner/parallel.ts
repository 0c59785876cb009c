/**
 * Bounded parallelism for the runner: hosts, files to link, files to hash.
 */

/**
 * Runs `fn` on every item, at most `limit` at once. Every item gets its turn
 * even when others fail (each host gets its chance; their failures are in the
 * log and the conditions), and only when nothing is running any more is the
 * first failure thrown, so a caller that cleans up never races a straggler.
 */
export async function inParallel<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  const errors: unknown[] = [];
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const item = items[next++]!;
      try {
        await fn(item);
      } catch (e) {
        errors.push(e);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (errors.length > 0) throw errors[0];
}
