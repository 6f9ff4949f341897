/**
 * Bounds on the shape of a parsed JSON value, checked without recursion.
 * JSON.parse accepts any depth, but JSON.stringify, canonicalize and most
 * tree walks recurse: a 6 KB body nested 3,000 levels deep overflows the stack.
 * Check parsed input here first, before anything recursive touches it.
 */

export interface JsonBounds {
  /** Levels of objects/arrays; the value itself is level 1 when it is an object or array. */
  maxDepth: number;
  /** Object members plus array elements, over the whole value. */
  maxMembers: number;
}

/** Which bound `value` exceeds, or null when it is within both. */
export function exceededJsonBound(value: unknown, bounds: JsonBounds): 'depth' | 'members' | null {
  const pending: { value: unknown; depth: number }[] = [{ value, depth: 1 }];
  let members = 0;
  while (pending.length > 0) {
    const { value: current, depth } = pending.pop()!;
    if (typeof current !== 'object' || current === null) continue;
    if (depth > bounds.maxDepth) return 'depth';
    const children = Array.isArray(current) ? current : Object.values(current);
    members += children.length;
    if (members > bounds.maxMembers) return 'members';
    for (const child of children) pending.push({ value: child, depth: depth + 1 });
  }
  return null;
}
