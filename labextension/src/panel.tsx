/**
 * The jobs panel of the left side bar: pending approvals, filters and the
 * jobs list with live events, answers and actions.
 */
import { Sanitizer } from '@jupyterlab/apputils';
import { IRenderMimeRegistry, MimeModel } from '@jupyterlab/rendermime';
import { ReactWidget } from '@jupyterlab/ui-components';
import { CommandRegistry } from '@lumino/commands';
import React, {
  useCallback,
  useEffect,
  useMemo,
  useRef,
  useState
} from 'react';

import {
  CANCELLABLE_STATUSES,
  IApproval,
  IJobEvent,
  IJobView,
  isTerminal,
  KNOWN_STATUSES
} from './api';
import { CommandIDs } from './commands';
import {
  callerLabel,
  formatTime,
  formatUsage,
  jobElapsed,
  shortId,
  statusLabel
} from './format';
import { useNow, useSignalValue } from './hooks';
import { GatewayModel } from './model';
import { NO_TYPESETTING, UntrustedSanitizer } from './untrusted';

interface IPanelProps {
  model: GatewayModel;
  commands: CommandRegistry;
  rendermime: IRenderMimeRegistry | null;
}

/** Run a command, surfacing nothing here: commands report their own errors. */
function run(
  commands: CommandRegistry,
  id: string,
  args: { [key: string]: string }
): Promise<void> {
  return commands.execute(id, args).then(
    () => undefined,
    () => undefined
  );
}

/**
 * Untrusted Markdown (an agent's answer) rendered with a clone of the
 * application's rendermime registry that has a strict sanitizer of its own
 * and no TeX typesetting: see untrusted.ts.
 */
function Markdown(props: {
  source: string;
  rendermime: IRenderMimeRegistry | null;
}): JSX.Element {
  const { source } = props;
  const rendermime = useMemo(
    () =>
      props.rendermime?.clone({
        sanitizer: new UntrustedSanitizer(new Sanitizer()),
        latexTypesetter: NO_TYPESETTING
      }) ?? null,
    [props.rendermime]
  );
  const host = useRef<HTMLDivElement>(null);
  const [failed, setFailed] = useState(false);
  useEffect(() => {
    const node = host.current;
    if (!node || !rendermime) {
      return;
    }
    let disposed = false;
    const renderer = rendermime.createRenderer('text/markdown');
    const model = new MimeModel({
      data: { 'text/markdown': source },
      trusted: false
    });
    renderer
      .renderModel(model)
      .then(() => {
        if (!disposed) {
          node.replaceChildren(renderer.node);
        }
      })
      .catch(() => {
        if (!disposed) {
          setFailed(true);
        }
      });
    return () => {
      disposed = true;
      renderer.dispose();
    };
  }, [source, rendermime]);
  if (!rendermime || failed) {
    return <pre className="llmgw-markdown-fallback">{source}</pre>;
  }
  return <div className="llmgw-markdown" ref={host} />;
}

function ConnectionBadge(props: { model: GatewayModel }): JSX.Element {
  const { model } = props;
  const [state, error] = useSignalValue([model.connectionChanged], () => [
    model.connection,
    model.lastError
  ]);
  const labels: { [key: string]: string } = {
    connecting: 'connecting…',
    streaming: 'live',
    polling: 'polling',
    unreachable: 'gateway unreachable'
  };
  return (
    <span
      className="llmgw-connection"
      data-testid="llmgw-connection"
      data-state={state}
      title={state === 'unreachable' ? error : ''}
    >
      {labels[state] ?? state}
    </span>
  );
}

function ApprovalItem(props: {
  approval: IApproval;
  commands: CommandRegistry;
}): JSX.Element {
  const { approval, commands } = props;
  const [busy, setBusy] = useState(false);
  const decide = (command: string) => {
    setBusy(true);
    void run(commands, command, { approvalId: approval.id }).finally(() =>
      setBusy(false)
    );
  };
  let args: string;
  try {
    args = JSON.stringify(approval.arguments, null, 2);
  } catch {
    args = String(approval.arguments);
  }
  return (
    <li
      className="llmgw-approval"
      data-testid="llmgw-approval"
      data-approval-id={approval.id}
    >
      <div className="llmgw-approval-head">
        <span className="llmgw-approval-tool" title="tool">
          {approval.tool}
        </span>
        <span className="llmgw-approval-caller" title={approval.caller}>
          {callerLabel(approval.caller)}
        </span>
        {approval.expires_at ? (
          <span className="llmgw-approval-expires">
            expires {formatTime(approval.expires_at)}
          </span>
        ) : null}
      </div>
      {approval.reason ? (
        <div className="llmgw-approval-reason">{approval.reason}</div>
      ) : null}
      <pre className="llmgw-approval-args" data-testid="llmgw-approval-args">
        {args}
      </pre>
      <div className="llmgw-actions">
        <button
          className="jp-mod-styled jp-mod-accept llmgw-approve"
          data-testid="llmgw-approve"
          disabled={busy}
          onClick={() => decide(CommandIDs.approve)}
        >
          Approve
        </button>
        <button
          className="jp-mod-styled jp-mod-warn llmgw-deny"
          data-testid="llmgw-deny"
          disabled={busy}
          onClick={() => decide(CommandIDs.deny)}
        >
          Deny
        </button>
      </div>
    </li>
  );
}

function Approvals(props: {
  model: GatewayModel;
  commands: CommandRegistry;
}): JSX.Element | null {
  const { model, commands } = props;
  const approvals = useSignalValue(
    [model.approvalsChanged],
    () => model.approvals
  );
  return (
    <section
      className="llmgw-approvals"
      data-testid="llmgw-approvals"
      data-count={approvals.length}
    >
      <h3 className="llmgw-section-title">
        Pending approvals ({approvals.length})
      </h3>
      {approvals.length === 0 ? (
        <div className="llmgw-empty">Nothing waits for your approval.</div>
      ) : (
        <ul className="llmgw-approval-list">
          {approvals.map(approval => (
            <ApprovalItem
              key={approval.id}
              approval={approval}
              commands={commands}
            />
          ))}
        </ul>
      )}
    </section>
  );
}

function Filters(props: { model: GatewayModel }): JSX.Element {
  const { model } = props;
  const [filter, statuses, callers] = useSignalValue(
    [model.filterChanged, model.jobsChanged, model.summaryChanged],
    () => [model.filter, model.statuses, model.callers] as const
  );
  const statusOptions = Array.from(new Set([...KNOWN_STATUSES, ...statuses]));
  const callerOptions = Array.from(new Set(['owner', ...callers]));
  return (
    <div className="llmgw-filters">
      <FilterSelect
        name="status"
        label="State"
        value={filter.status ?? ''}
        options={statusOptions}
        describe={statusLabel}
        onChange={status => model.setFilter({ ...model.filter, status })}
      />
      <FilterSelect
        name="caller"
        label="Caller"
        value={filter.caller ?? ''}
        options={callerOptions}
        describe={callerLabel}
        onChange={caller => model.setFilter({ ...model.filter, caller })}
      />
    </div>
  );
}

/** One filter: "all" plus the known values; class and test id follow the filter's name. */
function FilterSelect(props: {
  name: 'status' | 'caller';
  label: string;
  value: string;
  options: string[];
  describe: (option: string) => string;
  onChange: (value: string) => void;
}): JSX.Element {
  return (
    <label>
      {props.label}{' '}
      <select
        className={`llmgw-filter-${props.name}`}
        data-testid={`llmgw-filter-${props.name}`}
        value={props.value}
        onChange={e => props.onChange(e.target.value)}
      >
        <option value="">all</option>
        {props.options.map(option => (
          <option key={option} value={option}>
            {props.describe(option)}
          </option>
        ))}
      </select>
    </label>
  );
}

function EventList(props: { model: GatewayModel; jobId: string }): JSX.Element {
  const { model, jobId } = props;
  const events = useSignalValue<readonly IJobEvent[]>(
    [model.jobEventsChanged],
    () => model.eventsFor(jobId)
  );
  const list = useRef<HTMLOListElement>(null);
  useEffect(() => {
    const node = list.current;
    if (node) {
      node.scrollTop = node.scrollHeight;
    }
  }, [events.length]);
  if (events.length === 0) {
    return <div className="llmgw-empty llmgw-job-events">No events yet.</div>;
  }
  return (
    <ol className="llmgw-job-events" data-testid="llmgw-job-events" ref={list}>
      {events.map(event => (
        <li
          key={event.seq}
          className="llmgw-job-event"
          data-seq={event.seq}
          data-type={event.type}
        >
          <span className="llmgw-job-event-time">{formatTime(event.ts)}</span>
          <span className="llmgw-job-event-text">
            <span className="llmgw-job-event-type">{event.type}</span>{' '}
            <span className="llmgw-job-event-summary">{event.summary}</span>
          </span>
        </li>
      ))}
    </ol>
  );
}

function JobItem(props: {
  job: IJobView;
  expanded: boolean;
  now: number;
  onToggle: (jobId: string) => void;
  commands: CommandRegistry;
  model: GatewayModel;
  rendermime: IRenderMimeRegistry | null;
}): JSX.Element {
  const { job, expanded, now, onToggle, commands, model, rendermime } = props;
  const finished = isTerminal(job.status);
  const action = (command: string) => (event: React.MouseEvent) => {
    event.stopPropagation();
    void run(commands, command, { jobId: job.id });
  };
  const usage = formatUsage(job.usage);
  return (
    <li
      className={`llmgw-job${expanded ? ' llmgw-mod-expanded' : ''}`}
      data-testid="llmgw-job"
      data-job-id={job.id}
      data-status={job.status}
    >
      <div
        className="llmgw-job-header"
        role="button"
        tabIndex={0}
        aria-expanded={expanded}
        onClick={() => onToggle(job.id)}
        onKeyDown={e => {
          if (e.key === 'Enter' || e.key === ' ') {
            e.preventDefault();
            onToggle(job.id);
          }
        }}
      >
        <div className="llmgw-job-line">
          <span
            className="llmgw-job-status"
            data-testid="llmgw-job-status"
            data-status={job.status}
          >
            {statusLabel(job.status)}
          </span>
          <span className="llmgw-job-caller" title={job.caller}>
            {callerLabel(job.caller)}
          </span>
          <span className="llmgw-job-provider">{job.provider}</span>
          <span className="llmgw-job-elapsed">
            {jobElapsed(job, Math.max(now, Date.now()))}
          </span>
        </div>
        <div className="llmgw-job-prompt" title={job.prompt_preview ?? ''}>
          {job.prompt_preview ?? ''}
        </div>
        <div className="llmgw-job-meta">
          <span className="llmgw-job-id" title={job.id}>
            job {job.id}
          </span>
          {job.session_id ? (
            <span
              className="llmgw-job-session"
              data-session-id={job.session_id}
              title={job.session_id}
            >
              session {shortId(job.session_id)}
            </span>
          ) : null}
        </div>
      </div>
      <div className="llmgw-actions llmgw-job-actions">
        {CANCELLABLE_STATUSES.has(job.status) ? (
          <button
            className="jp-mod-styled jp-mod-warn llmgw-cancel"
            data-testid="llmgw-cancel"
            onClick={action(CommandIDs.cancelJob)}
          >
            Cancel
          </button>
        ) : null}
        {job.session_id ? (
          <button
            className="jp-mod-styled llmgw-fork"
            data-testid="llmgw-fork"
            onClick={action(CommandIDs.fork)}
            title="Fork this job's session with a new prompt"
          >
            Fork…
          </button>
        ) : null}
        <button
          className="jp-mod-styled llmgw-rerun"
          data-testid="llmgw-rerun"
          onClick={action(CommandIDs.rerun)}
          title="Run this request again with a new prompt"
        >
          Re-run…
        </button>
        <button
          className="jp-mod-styled llmgw-insert-magic"
          data-testid="llmgw-insert-magic"
          onClick={action(CommandIDs.insertMagic)}
          title={`Insert %llm_job ${job.id} into the active notebook`}
        >
          %llm_job
        </button>
      </div>
      {expanded ? (
        <div className="llmgw-job-details" data-testid="llmgw-job-details">
          <EventList model={model} jobId={job.id} />
          {job.error ? (
            <div className="llmgw-job-error" data-testid="llmgw-job-error">
              {job.error.category}: {job.error.message}
            </div>
          ) : null}
          {job.cancel_reason ? (
            <div className="llmgw-job-cancel-reason">
              cancelled: {job.cancel_reason}
            </div>
          ) : null}
          {finished && job.final_message ? (
            <div className="llmgw-job-answer" data-testid="llmgw-job-answer">
              <Markdown source={job.final_message} rendermime={rendermime} />
            </div>
          ) : null}
          {usage ? (
            <div className="llmgw-job-usage" data-testid="llmgw-job-usage">
              {usage}
            </div>
          ) : null}
        </div>
      ) : null}
    </li>
  );
}

function JobList(props: IPanelProps): JSX.Element {
  const { model, commands, rendermime } = props;
  const [jobs, total] = useSignalValue(
    [model.jobsChanged],
    () => [model.jobs, model.totalJobs] as const
  );
  const [expanded, setExpanded] = useState<ReadonlySet<string>>(new Set());
  const anyActive = jobs.some(job => !isTerminal(job.status));
  const now = useNow(anyActive);
  const toggle = useCallback(
    (jobId: string) => {
      if (expanded.has(jobId)) {
        model.unwatchJob(jobId);
        setExpanded(current => {
          const next = new Set(current);
          next.delete(jobId);
          return next;
        });
      } else {
        void model.watchJob(jobId).catch(() => undefined);
        setExpanded(current => new Set(current).add(jobId));
      }
    },
    [model, expanded]
  );
  return (
    <section className="llmgw-jobs" data-testid="llmgw-jobs">
      <h3 className="llmgw-section-title">
        Jobs ({jobs.length < total ? `${jobs.length} of ${total}` : total})
      </h3>
      <Filters model={model} />
      {jobs.length === 0 ? (
        <div className="llmgw-empty">No jobs.</div>
      ) : (
        <ul className="llmgw-job-list" data-testid="llmgw-job-list">
          {jobs.map(job => (
            <JobItem
              key={job.id}
              job={job}
              expanded={expanded.has(job.id)}
              now={now}
              onToggle={toggle}
              commands={commands}
              model={model}
              rendermime={rendermime}
            />
          ))}
        </ul>
      )}
    </section>
  );
}

function Panel(props: IPanelProps): JSX.Element {
  const { model, commands } = props;
  return (
    <div className="llmgw-panel-content">
      <header className="llmgw-panel-header">
        <h2 className="llmgw-panel-title">Codex jobs</h2>
        <ConnectionBadge model={model} />
        <button
          className="jp-mod-styled llmgw-refresh"
          data-testid="llmgw-refresh"
          title="Refresh"
          onClick={() => void run(commands, CommandIDs.refresh, {})}
        >
          Refresh
        </button>
      </header>
      <Approvals model={model} commands={commands} />
      <JobList {...props} />
    </div>
  );
}

/** The side bar widget (`#llmgw-panel.llmgw-panel`). */
export class GatewayPanel extends ReactWidget {
  constructor(private _props: IPanelProps) {
    super();
    this.id = 'llmgw-panel';
    this.addClass('llmgw-panel');
    this.node.dataset.testid = 'llmgw-panel';
  }

  render(): JSX.Element {
    return <Panel {...this._props} />;
  }
}
