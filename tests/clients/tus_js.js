#!/usr/bin/env node
// Drives the stock tus-js-client (npm `tus-js-client`, under Node) for tests/tus_clients.rs.
//
//   node tus_js.js upload FILE TOKEN SERVERS [TYPE]   create and upload FILE in 1 MiB chunks
//   node tus_js.js resume FILE TOKEN SERVERS URL      resume the upload at URL
//
// SERVERS is one base URL or several, comma-separated: each request goes to the next one
// in turn (the path kept), as behind a load balancer. Prints `URL <upload url>` once the
// upload exists, `CHUNK <offset>` after each accepted chunk, `DONE <upload url>` at the
// end; on failure `FAILED <status> <message>` and exit 1. The module is found through
// NODE_PATH (.ci/test installs it into the build directory).
'use strict'
const fs = require('fs')
const path = require('path')
const tus = require('tus-js-client')

const [mode, file, token, servers, extra] = process.argv.slice(2)
if (!['upload', 'resume'].includes(mode) || !file || !token || !servers) {
  console.error('usage: tus_js.js upload|resume FILE TOKEN SERVERS [TYPE|URL]')
  process.exit(2)
}
const bases = servers.split(',')

// Every request to the next server in turn.
class RoundRobin {
  constructor (inner) { this.inner = inner; this.n = 0 }
  createRequest (method, url) {
    const target = new URL(url)
    target.host = new URL(bases[this.n++ % bases.length]).host
    return this.inner.createRequest(method, target.toString())
  }
  getName () { return 'RoundRobin' }
}

const options = {
  chunkSize: 1024 * 1024,
  headers: { Authorization: `Bearer ${token}` },
  retryDelays: [0, 500, 1000, 2000],
  httpStack: new RoundRobin(new tus.DefaultHttpStack()),
  onUploadUrlAvailable () { console.log(`URL ${upload.url}`) },
  onChunkComplete (size, accepted) { console.log(`CHUNK ${accepted}`) },
  onSuccess () { console.log(`DONE ${upload.url}`) },
  onError (err) {
    const status = err.originalResponse ? err.originalResponse.getStatus() : 0
    console.log(`FAILED ${status} ${err.message.split('\n')[0]}`)
    process.exit(1)
  }
}
if (mode === 'upload') {
  options.endpoint = `${bases[0]}/files`
  options.metadata = { filename: path.basename(file), filetype: extra || 'application/octet-stream' }
} else {
  // No endpoint: an upload the server does not know is an error, not a new upload.
  options.uploadUrl = extra
}
const upload = new tus.Upload(fs.createReadStream(file), options)
upload.start()
