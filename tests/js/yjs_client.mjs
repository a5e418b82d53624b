// An editor built on the official `yjs` + `y-websocket` packages, driven by the tests over stdin.
//
// Commands (one JSON object per line on stdin):
//   {"cmd": "connect", "url": "ws://host:port/yjs", "room": "<workspace id>", "token": "..."}
//   {"cmd": "switch", "url": "..."}         the URL the provider uses from its next (re)connection on
//   {"cmd": "offline"} / {"cmd": "online"}  provider.disconnect() / provider.connect() (edits meanwhile stay local)
//   {"cmd": "replay", "trace": "file.json.gz", "file": "path"}   a trace, one transaction per txn
//   {"cmd": "type", "file": "path", "prefix": "J", "count": 100, "every_ms": 5}   unique tokens "J<i>."
//   {"cmd": "insert", "file": "path", "pos": 0, "text": "..."}
//   {"cmd": "expect", "file": "path", "text": "...", "within_ms": 30000}   answers {event: answer, matched, text?}
//   {"cmd": "report", "file": "path"}        answers {"event": "report", "text", "synced", "connected"}
//   {"cmd": "awareness"}                     answers {"event": "awareness", client_id, states: {id: state}}
//   {"cmd": "awareness_until", "expect": {"<client id>": "<user name>" | null}, "within_ms": 30000}
//                                            answers {event: awareness_matched, matched, states} as soon as
//                                            every listed client's user.name is the one given (null: no state)
//   {"cmd": "exit"}
// Events on stdout, one JSON object per line: status, synced, closed {code, reason}, denied {reason},
// connection_close {code} (every close by the server, also those it reconnects after),
// replayed {txns}, typed {count}, inserted, report, error {message}.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import { createInterface } from 'node:readline'
import { readFileSync } from 'node:fs'
import { gunzipSync } from 'node:zlib'

const say = (event, data = {}) => process.stdout.write(JSON.stringify({ event, ...data }) + '\n')
const doc = new Y.Doc()
const files = doc.getMap('files')
let provider = null

const warn = console.warn
console.warn = (...args) => {
  const text = args.map(String).join(' ')
  if (text.startsWith('Permission denied')) say('denied', { reason: text })
  else warn(...args)
}

const textOf = (file) => {
  const text = files.get(file)
  if (!(text instanceof Y.Text)) throw new Error(`no Y.Text at files[${JSON.stringify(file)}]`)
  return text
}

const awarenessStates = () => Object.fromEntries([...provider.awareness.getStates()].map(([id, state]) => [String(id), state]))

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

const commands = {
  connect ({ url, room, token }) {
    provider = new WebsocketProvider(url, room, doc, {
      params: token === undefined ? {} : { token },
      WebSocketPolyfill: WebSocket,
      disableBc: true,
      maxBackoffTime: 300
    })
    provider.on('status', ({ status }) => say('status', { status }))
    provider.on('sync', (synced) => { if (synced) say('synced') })
    provider.on('closed', ({ code, reason }) => say('closed', { code, reason }))
    provider.on('connection-close', (event) => { if (event) say('connection_close', { code: event.code }) })
    provider.awareness.setLocalStateField('user', { name: 'js editor' })
  },
  switch ({ url }) {
    provider.serverUrl = url
  },
  offline () {
    provider.disconnect()
    say('offline')
  },
  online () {
    provider.connect()
  },
  replay ({ trace, file }) {
    const data = JSON.parse(gunzipSync(readFileSync(trace)).toString('utf8'))
    const text = textOf(file)
    for (const txn of data.txns) {
      doc.transact(() => {
        for (const [pos, del, ins] of txn.patches) {
          if (del > 0) text.delete(pos, del)
          if (ins.length > 0) text.insert(pos, ins)
        }
      })
    }
    say('replayed', { txns: data.txns.length })
  },
  type ({ file, prefix, count, every_ms: everyMs }) {
    // Runs in the background, so that `switch` and `report` are handled while it types.
    const text = textOf(file)
    const run = async () => {
      for (let i = 0; i < count; i++) {
        // Between two tokens (after a '.'), so that tokens typed concurrently never split each other.
        const current = text.toString()
        const boundaries = [0]
        for (let at = current.indexOf('.'); at !== -1; at = current.indexOf('.', at + 1)) boundaries.push(at + 1)
        text.insert(boundaries[Math.floor(Math.random() * boundaries.length)], `${prefix}${i}.`)
        if (everyMs > 0) await sleep(everyMs)
      }
      say('typed', { count })
    }
    run().catch((err) => say('error', { message: String(err) }))
  },
  insert ({ file, pos, text }) {
    textOf(file).insert(pos, text)
    say('inserted')
  },
  expect ({ file, text: expected, within_ms: withinMs }) {
    // Answers `answer {matched: true}` as soon as files[file] reads `expected` (checked on every
    // document update), or `answer {matched: false, text}` after `within_ms`.
    const current = () => { const t = files.get(file); return t instanceof Y.Text ? t.toString() : null }
    let timer = null
    const check = () => {
      if (current() !== expected) return
      doc.off('update', check)
      clearTimeout(timer)
      say('answer', { matched: true })
    }
    timer = setTimeout(() => { doc.off('update', check); say('answer', { matched: false, text: current() }) }, withinMs)
    doc.on('update', check)
    check()
  },
  report ({ file }) {
    const text = files.get(file)
    say('report', {
      text: text instanceof Y.Text ? text.toString() : null,
      synced: provider !== null && provider.synced,
      connected: provider !== null && provider.wsconnected
    })
  },
  awareness () {
    say('awareness', { client_id: doc.clientID, states: awarenessStates() })
  },
  awareness_until ({ expect, within_ms: withinMs }) {
    const awareness = provider.awareness
    const holds = () => Object.entries(expect).every(([id, name]) => {
      const state = awareness.getStates().get(Number(id))
      return name === null ? state === undefined : (state !== undefined && state.user !== undefined && state.user.name === name)
    })
    let timer = null
    const check = () => {
      if (!holds()) return
      awareness.off('change', check)
      clearTimeout(timer)
      say('awareness_matched', { matched: true, states: awarenessStates() })
    }
    timer = setTimeout(() => {
      awareness.off('change', check)
      say('awareness_matched', { matched: false, states: awarenessStates() })
    }, withinMs)
    awareness.on('change', check)
    check()
  },
  exit () {
    if (provider !== null) provider.destroy()
    process.exit(0)
  }
}

const lines = createInterface({ input: process.stdin })
lines.on('line', (line) => {
  if (!line.trim()) return
  try {
    const command = JSON.parse(line)
    commands[command.cmd](command)
  } catch (err) {
    say('error', { message: String(err && err.stack ? err.stack : err) })
  }
})
lines.on('close', () => commands.exit())
