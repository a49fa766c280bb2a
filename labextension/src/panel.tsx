/**
 * The jobs panel of the left side bar: pending approvals, filters and the
 * jobs list with live events, answers and actions.
 */
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { HTMLSelect, ReactWidget } from '@jupyterlab/ui-components';
import { CommandRegistry } from '@lumino/commands';
import React, { useCallback, useEffect, useRef, useState } from 'react';

import {
  CANCELLABLE_STATUSES,
  IApproval,
  IJobEvent,
  IJobView,
  isTerminal,
  KNOWN_STATUSES
} from './api';
import { CommandIDs, runCommand } from './commands';
import {
  ApprovalCard,
  JobAge,
  Markdown,
  SmallButton,
  StateBadge,
  useDecision
} from './components';
import {
  callerLabel,
  formatTime,
  formatUsage,
  jobState,
  outcomeText,
  IUsageRow,
  policyErrorText,
  providerLabel,
  shortId,
  statusLabel,
  usageHeadline,
  usageRows
} from './format';
import { useNow, useSignalValue } from './hooks';
import { GatewayModel } from './model';

interface IPanelProps {
  model: GatewayModel;
  commands: CommandRegistry;
  rendermime: IRenderMimeRegistry | null;
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

/** A broken owner policy (every tool call is refused) says so at the top. */
function PolicyError(props: { model: GatewayModel }): JSX.Element | null {
  const { model } = props;
  const message = useSignalValue([model.summaryChanged], () =>
    policyErrorText(model.summary)
  );
  if (!message) {
    return null;
  }
  return (
    <div
      className="llmgw-policy-error"
      data-testid="llmgw-policy-error"
      role="alert"
    >
      <strong>
        The owner policy did not load: every tool call is refused.
      </strong>{' '}
      {message}
    </div>
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
  const now = useNow(approvals.length > 0, 15000);
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
          {approvals.map((approval: IApproval) => (
            <ApprovalCard
              key={approval.id}
              approval={approval}
              now={now}
              onDecide={approve =>
                runCommand(
                  commands,
                  approve ? CommandIDs.approve : CommandIDs.deny,
                  {
                    approvalId: approval.id
                  }
                )
              }
            />
          ))}
        </ul>
      )}
    </section>
  );
}

function Filters(props: { model: GatewayModel }): JSX.Element {
  const { model } = props;
  const [filter, statuses, callers, providers] = useSignalValue(
    [model.filterChanged, model.jobsChanged, model.summaryChanged],
    () =>
      [model.filter, model.statuses, model.callers, model.providers] as const
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
      <FilterSelect
        name="provider"
        label="Provider"
        value={filter.provider ?? ''}
        options={providers}
        describe={providerLabel}
        onChange={provider => model.setFilter({ ...model.filter, provider })}
      />
    </div>
  );
}

/** One filter: "all" plus the known values; class and test id follow the filter's name. */
function FilterSelect(props: {
  name: 'status' | 'caller' | 'provider';
  label: string;
  value: string;
  options: string[];
  describe: (option: string) => string;
  onChange: (value: string) => void;
}): JSX.Element {
  const id = `llmgw-filter-${props.name}`;
  return (
    <label className="llmgw-filter" htmlFor={id}>
      <span className="llmgw-filter-label">{props.label}</span>
      <HTMLSelect
        id={id}
        className={`llmgw-filter-${props.name}`}
        data-testid={`llmgw-filter-${props.name}`}
        value={props.value}
        onChange={e => props.onChange(e.target.value)}
        options={[
          { value: '', label: 'all' },
          ...props.options.map(option => ({
            value: option,
            label: props.describe(option)
          }))
        ]}
      />
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
  const { state } = jobState(job);
  const decision = useDecision(model, job);
  const action = (command: string) => (event: React.MouseEvent) => {
    event.stopPropagation();
    void runCommand(commands, command, { jobId: job.id });
  };
  const usage = formatUsage(job.usage);
  const outcome = outcomeText(job, decision);
  const prompt = job.prompt_preview ?? '';
  return (
    <li
      className={`llmgw-job${expanded ? ' llmgw-mod-expanded' : ''}`}
      data-testid="llmgw-job"
      data-job-id={job.id}
      data-status={job.status}
      data-state={state}
    >
      <div
        className="llmgw-job-header"
        role="button"
        tabIndex={0}
        aria-expanded={expanded}
        aria-label={`job ${job.id}, ${jobState(job).label}: ${prompt.slice(0, 80)}`}
        onClick={() => onToggle(job.id)}
        onKeyDown={e => {
          if (e.key === 'Enter' || e.key === ' ') {
            e.preventDefault();
            onToggle(job.id);
          }
        }}
      >
        <div className="llmgw-job-line">
          <StateBadge
            job={job}
            className="llmgw-job-status"
            testid="llmgw-job-status"
          />
          <span className="llmgw-job-caller" title={job.caller}>
            {callerLabel(job.caller)}
          </span>
          <span
            className="llmgw-job-provider"
            data-testid="llmgw-job-provider"
            data-provider={job.provider}
            title={`provider ${job.provider}`}
          >
            {providerLabel(job.provider)}
          </span>
          <JobAge
            job={job}
            now={Math.max(now, Date.now())}
            className="llmgw-job-age"
          />
        </div>
        <div className="llmgw-job-prompt" title={prompt}>
          {prompt}
        </div>
        {outcome && state !== 'cancelled' ? (
          <div className="llmgw-job-outcome" data-testid="llmgw-job-outcome">
            {outcome}
          </div>
        ) : null}
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
          <SmallButton
            kind="warn"
            className="llmgw-cancel"
            testid="llmgw-cancel"
            onClick={action(CommandIDs.cancelJob)}
          >
            Cancel
          </SmallButton>
        ) : null}
        {finished && job.session_id ? (
          <SmallButton
            className="llmgw-fork"
            testid="llmgw-fork"
            onClick={action(CommandIDs.fork)}
            title="Fork this job's session with a new prompt"
          >
            Fork…
          </SmallButton>
        ) : null}
        {finished ? (
          <SmallButton
            className="llmgw-rerun"
            testid="llmgw-rerun"
            onClick={action(CommandIDs.rerun)}
            title="Run this request again with a new prompt"
          >
            Re-run…
          </SmallButton>
        ) : null}
        <SmallButton
          className="llmgw-insert-magic"
          testid="llmgw-insert-magic"
          onClick={action(CommandIDs.insertMagic)}
          title={`Insert %llm_job ${job.id} into the active notebook`}
        >
          %llm_job
        </SmallButton>
      </div>
      {expanded ? (
        <div className="llmgw-job-details" data-testid="llmgw-job-details">
          <EventList model={model} jobId={job.id} />
          {job.error ? (
            <div className="llmgw-job-error" data-testid="llmgw-job-error">
              {job.error.category}: {job.error.message}
            </div>
          ) : null}
          {outcome && state === 'cancelled' ? (
            <div className="llmgw-job-cancel-reason">{outcome}</div>
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

/** One table of the usage totals: a row per caller or per provider. */
function UsageTable(props: {
  by: 'caller' | 'provider';
  rows: IUsageRow[];
}): JSX.Element {
  const { by, rows } = props;
  return (
    <table className="llmgw-usage-table" data-testid={`llmgw-usage-by-${by}`}>
      <caption className="llmgw-usage-caption">Tokens and cost by {by}</caption>
      <thead>
        <tr>
          <th scope="col">{by === 'caller' ? 'Caller' : 'Provider'}</th>
          <th scope="col">Jobs</th>
          <th scope="col">
            <span className="llmgw-visually-hidden">tokens </span>In
          </th>
          <th scope="col">
            <span className="llmgw-visually-hidden">tokens </span>Out
          </th>
          <th scope="col">Cost</th>
        </tr>
      </thead>
      <tbody>
        {rows.map(row => (
          <tr key={row.name} data-name={row.name}>
            <th scope="row" title={row.name}>
              {row.label}
            </th>
            <td>{row.jobs}</td>
            <td title={row.tokensInTitle || undefined}>{row.tokensIn}</td>
            <td>{row.tokensOut}</td>
            <td title={row.costTitle}>{row.cost}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

/**
 * Tokens and cost of every job the gateway keeps, per caller and per
 * provider (from the summary): folded away under a one-line total.
 */
function UsageTotals(props: { model: GatewayModel }): JSX.Element | null {
  const { model } = props;
  const usage = useSignalValue([model.summaryChanged], () => model.usage);
  const headline = usageHeadline(usage);
  if (!headline) {
    return null;
  }
  return (
    <details className="llmgw-usage" data-testid="llmgw-usage">
      <summary className="llmgw-usage-summary">
        <span className="llmgw-section-title">Usage</span>{' '}
        <span
          className="llmgw-usage-headline"
          data-testid="llmgw-usage-headline"
        >
          {headline.split(' · ').map((part, i) => (
            <React.Fragment key={i}>
              {i > 0 ? ' · ' : ''}
              <span className="llmgw-usage-figure">{part}</span>
            </React.Fragment>
          ))}
        </span>
      </summary>
      <UsageTable by="provider" rows={usageRows(usage, 'provider')} />
      <UsageTable by="caller" rows={usageRows(usage, 'caller')} />
    </details>
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
        <h2 className="llmgw-panel-title">Agent jobs</h2>
        <ConnectionBadge model={model} />
        <SmallButton
          className="llmgw-refresh"
          testid="llmgw-refresh"
          title="Fetch jobs and approvals again"
          onClick={() => void runCommand(commands, CommandIDs.refresh, {})}
        >
          Refresh
        </SmallButton>
      </header>
      <PolicyError model={model} />
      <Approvals model={model} commands={commands} />
      <UsageTotals model={model} />
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
