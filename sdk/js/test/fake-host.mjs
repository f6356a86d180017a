// A stand-in for the `wasmeca:plugin/host` import, for unit tests under Node: records log lines
// and answers act/prior through functions a test sets on `globalThis.fakeHost`.
const state = (globalThis.fakeHost ??= { logs: [], act: () => 'null', prior: () => 'null' });

export function act(msg) {
  return state.act(msg);
}

export function prior(msg) {
  return state.prior(msg);
}

export function log(level, text) {
  state.logs.push([level, text]);
}
