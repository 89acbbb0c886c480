#!/usr/bin/env node
// A plain tus 1.0 client for scripts/bench-rustus.sh: the same client for every server
// compared. Creates an upload, sends the file in PATCHes (one, or CHUNK bytes each), with
// `Upload-Checksum: sha256` when asked, over one keep-alive connection; repeats RUNS times
// after one warm-up run and prints the throughput in MiB/s.
//
//   node tus-bench-client.js ENDPOINT FILE RUNS CHUNK(0: one PATCH) none|sha256 [TOKEN]
'use strict'
const http = require('http')
const crypto = require('crypto')
const fs = require('fs')

const [endpoint, file, runs, chunkArg, checksum, token] = process.argv.slice(2)
if (!endpoint || !file) {
  console.error('usage: tus-bench-client.js ENDPOINT FILE RUNS CHUNK none|sha256 [TOKEN]')
  process.exit(2)
}
const data = fs.readFileSync(file)
const chunk = Number(chunkArg) || data.length
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })

function request (method, url, headers, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, agent, headers: {
      'Tus-Resumable': '1.0.0',
      ...(token ? { Authorization: `Bearer ${token}` } : {}),
      ...headers
    } }, (res) => {
      res.resume()
      res.on('end', () => resolve(res))
    })
    req.on('error', reject)
    req.end(body)
  })
}

async function upload () {
  const created = await request('POST', endpoint, {
    'Upload-Length': String(data.length),
    'Upload-Metadata': 'filename ' + Buffer.from('bench.jpg').toString('base64') +
      ',filetype ' + Buffer.from('image/jpeg').toString('base64')
  })
  if (created.statusCode !== 201) throw new Error(`POST: ${created.statusCode}`)
  const at = new URL(created.headers.location, endpoint).toString()
  for (let offset = 0; offset < data.length; offset += chunk) {
    const body = data.subarray(offset, Math.min(offset + chunk, data.length))
    const headers = {
      'Content-Type': 'application/offset+octet-stream',
      'Upload-Offset': String(offset),
      'Content-Length': String(body.length)
    }
    if (checksum === 'sha256') {
      headers['Upload-Checksum'] = 'sha256 ' + crypto.createHash('sha256').update(body).digest('base64')
    }
    const res = await request('PATCH', at, headers, body)
    if (res.statusCode !== 204) throw new Error(`PATCH: ${res.statusCode}`)
  }
  await request('DELETE', at, {})
}

(async () => {
  await upload()
  const n = Number(runs) || 10
  const start = process.hrtime.bigint()
  for (let i = 0; i < n; i++) await upload()
  const secs = Number(process.hrtime.bigint() - start) / 1e9
  console.log(((data.length * n) / secs / (1 << 20)).toFixed(1))
  agent.destroy()
})().catch((e) => { console.error(e.message); process.exit(1) })
