// A stand-in for the `wasmeca:plugin/host` import, for unit tests under Node: records log lines
// and answers act/prior/publish through functions a test sets on `globalThis.fakeHost`.
const state = (globalThis.fakeHost ??= { logs: [], act: () => 'null', prior: () => 'null', publish: () => undefined });

export function act(msg) {
  return state.act(msg);
}

export function prior(msg) {
  return state.prior(msg);
}

export function log(level, text) {
  state.logs.push([level, text]);
}

export function publish(event) {
  return state.publish(event);
}
