'use strict';
// The Node.js `ali-ons` client (unmodified, from the npm registry) against a ferrocket
// name server and broker: sends with tags and keys, a push consumer with a tag filter,
// and an SQL92 consumer. Prints one line per check and `N passed, N failed`.
// The topic must exist first: ali-ons does not fall back to TBW102 (run.sh creates it).
const { Producer, Consumer, Message } = require('ali-ons');
const httpclient = require('urllib');

const ns = process.argv[2];
const cfg = { httpclient, accessKeyId: 'ak', accessKeySecret: 'sk', nameSrv: ns };
const results = [];
function check(name, ok, detail) {
  results.push(ok);
  console.log((ok ? 'ok   ' : 'FAIL ') + name + (detail ? ': ' + detail : ''));
}
const sleep = ms => new Promise(r => setTimeout(r, ms));
async function until(pred, ms) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline && !pred()) await sleep(200);
}

(async () => {
  const producer = new Producer(Object.assign({ producerGroup: 'ons_pg' }, cfg));
  await producer.ready();
  const sent = [];
  for (let i = 0; i < 6; i++) {
    const msg = new Message('OnsTopic', i % 2 ? 'TagB' : 'TagA', 'ons-' + i);
    msg.keys = [ 'k' + i ];
    msg.setUserProperties ? msg.setUserProperties({ a: String(i) }) : (msg.properties.a = String(i));
    const r = await producer.send(msg);
    sent.push(r.sendStatus);
  }
  check('sends answered SEND_OK', sent.every(s => s === 'SEND_OK'), JSON.stringify(sent));

  const got = [];
  const consumer = new Consumer(Object.assign({ consumerGroup: 'ons_cg', consumeFromWhere: 'CONSUME_FROM_FIRST_OFFSET' }, cfg));
  consumer.on('error', () => {}); // the %RETRY% route appears with the first heartbeat
  consumer.subscribe('OnsTopic', 'TagA', async msg => { got.push(msg.body.toString()); });
  await consumer.ready();
  await until(() => got.length >= 3, 30000);
  await sleep(1000); // anything more (a TagB) would show up now
  check('a tag consumer receives exactly the TagA messages', JSON.stringify(got.sort()) === JSON.stringify([ 'ons-0', 'ons-2', 'ons-4' ]), JSON.stringify(got));

  const sql = [];
  const sqlConsumer = new Consumer(Object.assign({ consumerGroup: 'ons_sql_cg', consumeFromWhere: 'CONSUME_FROM_FIRST_OFFSET' }, cfg));
  sqlConsumer.on('error', () => {});
  sqlConsumer.subscribe('OnsTopic', { expressionType: 'SQL92', subString: 'a >= 4' }, async msg => { sql.push(msg.body.toString()); });
  await sqlConsumer.ready();
  await until(() => sql.length >= 2, 30000);
  await sleep(1000);
  check('an SQL92 consumer receives exactly what its selector picks', JSON.stringify(sql.sort()) === JSON.stringify([ 'ons-4', 'ons-5' ]), JSON.stringify(sql));

  await sqlConsumer.close();
  await consumer.close();
  await producer.close();
  const passed = results.filter(Boolean).length;
  console.log(`e2e/node: ${passed} passed, ${results.length - passed} failed`);
  process.exit(results.length === passed ? 0 : 1);
})().catch(e => { console.error('e2e/node: error', e); process.exit(2); });
