// SPDX-License-Identifier: MIT
// The step runner of the cloud client scripts (azure_client.mjs, gcp_client.mjs).
//
// runSteps(steps, ops, failure) runs each step {"op": NAME, ...} through ops[NAME](step), in order, and
// returns the results, one per step: {"ok": ANSWER, "ms"} or {"error": failure(e), "ms"}.  A failed step
// does not stop the ones after it.  A step's "take": {FIELD: N} sets its FIELD to the same-named field
// of step N's answer (unwrap what step N wrapped).
export async function runSteps(steps, ops, failure) {
  const results = [];
  for (const step of steps) {
    const start = performance.now();
    try {
      if (!(step.op in ops)) throw new Error(`unknown op ${step.op}`);
      for (const [field, index] of Object.entries(step.take ?? {})) step[field] = results[index].ok[field];
      results.push({ ok: await ops[step.op](step), ms: Math.round(performance.now() - start) });
    } catch (e) {
      results.push({ error: failure(e), ms: Math.round(performance.now() - start) });
    }
  }
  return results;
}
